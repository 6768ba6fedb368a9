"""Prometheus metrics at ``GET /metrics`` (text exposition format, no token needed).

What is exported (every name starts with ``shopfloor_``):

- API: ``api_requests_total{method, route, status}`` and the histogram
  ``api_request_duration_seconds{method, route}`` (``route`` is the route's template, e.g.
  ``/api/v1/history/{signal:path}``, or ``unmatched``: label values stay few).
- Pipeline (inside ``shopfloor up``/``demo``): ``pipeline_values_received_total``,
  ``pipeline_values_stored_total``, ``pipeline_dead_letters_total``,
  ``pipeline_commits_total``, the gauges ``pipeline_queue_depth``,
  ``pipeline_lag_seconds`` (arrival to historian commit, last commit) and
  ``pipeline_values_per_second``, and the histogram ``historian_write_seconds`` (one
  observation per historian append).
- Per connection: ``connector_values_total``, ``connector_batches_total``,
  ``connector_reconnects_total``, ``connector_connected`` (1 or 0) and
  ``connector_values_per_second`` (over the scrapes of the last minute; PromQL's
  ``rate(shopfloor_connector_values_total[1m])`` says the same from the counter).
- ``events_stored_total`` (events from connectors), plus the process's own metrics
  (``process_*``: CPU, memory, open files).

Each app has its own registry, so several apps in one process do not collide.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.edge.pipeline import WRITE_BUCKETS_S

if TYPE_CHECKING:
    from shopfloor.api._deps import ApiContext

__all__ = ["METRICS_PATH", "install_metrics"]

METRICS_PATH: Final = "/metrics"
_WINDOW_S: Final = 60.0


class _ApiMetrics:
    """The request counter and latency histogram of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "shopfloor_api_requests",
            "API requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "shopfloor_api_request_duration_seconds",
            "Time to answer an API request, by method and route template.",
            ("method", "route"),
            registry=registry,
        )


class _MetricsMiddleware:
    """Counts every HTTP request and times it (pure ASGI: streaming bodies pass through)."""

    def __init__(self, app: ASGIApp, metrics: _ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _template(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - began)


def _template(scope: Scope) -> str:
    """The matched route's full template (``/api/v1/history/{signal:path}``), ``unmatched``
    when no route matched.

    Routers included under a prefix may report their own route (without the prefix): the
    prefix is what precedes the route's rendered path in the request path.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    rendered = getattr(route, "path_format", template)
    try:
        rendered = rendered.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return template
    path = str(scope.get("path", ""))
    return path[: len(path) - len(rendered)] + template if path.endswith(rendered) else template


class _RuntimeCollector(Collector):
    """Reads the runtime's pipeline and connector counters at each scrape."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def _rate(self, name: str, now: float, total: int) -> float:
        samples = self._samples.setdefault(name, deque())
        samples.append((now, total))
        while len(samples) > 2 and now - samples[0][0] > _WINDOW_S:
            samples.popleft()
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 and v1 >= v0 else 0.0

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the runtime attached at scrape time

    def collect(self) -> Iterable[Metric]:
        rt = self._ctx.runtime
        if rt is None or rt.pipeline is None:
            return
        st = rt.pipeline.stats
        p = "shopfloor_pipeline_"
        for name, value, text in (
            ("values_received", st.values_in, "Values accepted from connectors."),
            ("values_stored", st.values_stored, "Values committed to the historian."),
            ("dead_letters", st.dead_letters, "Readings the mapper rejected (dead letters)."),
            ("commits", st.commits, "Historian commits of the pipeline."),
        ):
            yield CounterMetricFamily(p + name, text, value=value)
        yield GaugeMetricFamily(
            p + "queue_depth", "Batches waiting for the writer.", st.queue_depth
        )
        yield GaugeMetricFamily(
            p + "lag_seconds", "Arrival to historian commit, of the last commit.", st.lag_ms / 1e3
        )
        yield GaugeMetricFamily(
            p + "values_per_second", "Values stored per second, recently.", st.values_per_s()
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*WRITE_BUCKETS_S, float("inf")), st.write_counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(
            "shopfloor_historian_write_seconds",
            "Time of one historian append of the pipeline.",
            buckets=buckets,
            sum_value=st.write_seconds,
        )
        yield CounterMetricFamily(
            "shopfloor_events_stored", "Events from connectors stored.", value=rt.events_stored
        )
        yield from self._connectors(rt.connectors)

    def _connectors(self, connectors: Iterable[Any]) -> Iterable[Metric]:
        labels = ["connection", "protocol"]
        c = "shopfloor_connector_"
        values = CounterMetricFamily(c + "values", "Values a connection delivered.", labels=labels)
        batches = CounterMetricFamily(
            c + "batches", "Batches a connection delivered.", labels=labels
        )
        reconnects = CounterMetricFamily(
            c + "reconnects", "Reconnects of a connection.", labels=labels
        )
        connected = GaugeMetricFamily(c + "connected", "1 while connected, else 0.", labels=labels)
        rate = GaugeMetricFamily(
            c + "values_per_second",
            "Values per second of a connection (last minute).",
            labels=labels,
        )
        now = time.monotonic()
        for conn in connectors:
            s = conn.status
            key = [s.name, s.protocol]
            values.add_metric(key, s.values_total)
            batches.add_metric(key, s.batches_total)
            reconnects.add_metric(key, s.reconnects)
            connected.add_metric(key, 1.0 if s.state == "connected" else 0.0)
            rate.add_metric(key, self._rate(s.name, now, s.values_total))
        yield from (values, batches, reconnects, connected, rate)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def install_metrics(app: FastAPI, ctx: ApiContext) -> None:
    """Count the app's requests and serve every metric at :data:`METRICS_PATH`."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(_RuntimeCollector(ctx))
    app.state.metrics_registry = registry
    app.add_middleware(_MetricsMiddleware, metrics=_ApiMetrics(registry))

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
