"""Request and response bodies of the API (pydantic 2), as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "AckIn",
    "AlarmOut",
    "AssetDetail",
    "AssetOut",
    "AssetTypeOut",
    "AuditOut",
    "BucketHistory",
    "DeadLetterOut",
    "DowntimeRecordOut",
    "EventOut",
    "Health",
    "KpiDefinition",
    "KpiTable",
    "LatestOut",
    "Me",
    "Page",
    "ParetoRow",
    "ProblemTypeOut",
    "RawHistory",
    "Readiness",
    "ReasonIn",
    "SetpointIn",
    "SetpointOut",
    "SignalDefOut",
    "SignalOut",
]

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Page(_Out, Generic[T]):
    """One page of a list; follow ``next`` (or pass ``next_cursor``) for the rest."""

    items: list[T]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last.")
    next: str | None = Field(description="URL of the next page; null on the last.")


class Me(_Out):
    """The token the request was made with."""

    id: str
    name: str
    scope: Literal["read", "operate", "admin"]
    subtrees: list[str]
    created_at: datetime
    expires_at: datetime | None


class Health(_Out):
    """Liveness: the process answers."""

    status: Literal["ok"]


class Readiness(_Out):
    """Readiness: the historian answers and, with a runtime, the pipeline runs."""

    status: Literal["ready"]
    historian: str
    runtime: bool = Field(description="True when the server runs inside 'shopfloor up'.")
    connectors_total: int
    connectors_connected: int


class ProblemTypeOut(_Out):
    """A problem type of this API."""

    type: str
    status: int
    title: str
    description: str


class AssetOut(_Out):
    """A node of the ISA-95 asset tree."""

    path: str
    id: str
    name: str
    level: Literal["enterprise", "site", "area", "line", "cell", "equipment"]
    type: str | None = Field(description="The asset type (equipment only).")
    parent: str | None
    source: Literal["model", "discovered"] = Field(
        description="'discovered': equipment created at run time from what a device announced."
    )


class AssetDetail(AssetOut):
    """An asset with its children, signals and attributes."""

    children: list[str]
    signals: list[str] = Field(description="Full names of the asset's own signals.")
    attributes: dict[str, JsonValue]


class SignalDefOut(_Out):
    """A signal as an asset type declares it."""

    name: str
    data_type: str
    unit: str | None
    kind: str
    description: str
    semantic_id: str | None
    low: float | None
    high: float | None
    derived: bool


class AssetTypeOut(_Out):
    """An asset type merged with its ancestors (``chain``: itself first)."""

    id: str
    name: str | None
    description: str
    extends: str | None
    chain: list[str]
    signals: list[SignalDefOut]
    attributes: dict[str, JsonValue]
    states: dict[str, str] = Field(description="Raw state code → standard state.")


class SignalOut(_Out):
    """A signal of an asset with its metadata."""

    path: str
    asset: str
    name: str
    data_type: str
    unit: str | None
    kind: str
    description: str
    semantic_id: str | None
    low: float | None
    high: float | None
    derived: bool
    writable: bool = Field(description="A bound setpoint: POST /setpoints/{path} writes it.")
    connection: str | None
    source: Literal["model", "discovered"]


class LatestOut(_Out):
    """The newest sample of a signal."""

    signal: str
    data_type: str
    ts: datetime
    quality: int
    value: JsonValue


class _History(_Out):
    signal: str
    data_type: str
    unit: str | None
    start: datetime
    end: datetime
    next_cursor: str | None
    next: str | None


class RawHistory(_History):
    """Raw samples of one signal, as columns of equal length, oldest first."""

    ts: list[datetime]
    quality: list[int]
    value: list[JsonValue] = Field(description="Non-finite floats are null (exports keep them).")


class BucketHistory(_History):
    """Downsampled history: one entry per non-empty, epoch-aligned bucket, as columns."""

    bucket_s: float = Field(description="Bucket width in seconds.")
    bucket: list[datetime] = Field(description="Start of each bucket.")
    first: list[float | int | None]
    last: list[float | int | None]
    min: list[float | int | None]
    max: list[float | int | None]
    avg: list[float | None]
    count: list[int]


class KpiDefinition(_Out):
    """How a KPI column is computed."""

    name: str
    formula: str
    unit: str


class KpiTable(_Out):
    """KPI rows of an asset, one per window."""

    asset: str
    kpi: Literal["oee", "losses", "iso22400"]
    start: datetime
    end: datetime
    by: Literal["shift", "hour", "day"] | None
    definitions: list[KpiDefinition]
    rows: list[dict[str, JsonValue]]
    next_cursor: str | None
    next: str | None


class EventOut(_Out):
    """An event: a downtime, alarm, anomaly or a device error."""

    event_id: str
    kind: str
    asset: str
    signal: str | None
    ts: datetime
    end_ts: datetime | None
    code: str | None
    severity: int | None
    message: str | None
    data: JsonValue = Field(description="The event's JSON data (e.g. reason, raw code).")


class ReasonIn(BaseModel):
    """A downtime reason to assign."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200, description="Reason code, e.g. 'tooling'.")


class AckIn(BaseModel):
    """An alarm acknowledgement."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=500, description="Why, or what was done.")


class AlarmOut(_Out):
    """An alarm's state (ISA-18.2): normal, unack_active, ack_active or rtn_unack."""

    alarm_id: str = Field(description="<asset path>/<rule id>.")
    rule: str
    asset: str
    signal: str | None
    severity: int
    priority: Literal["low", "medium", "high", "critical"]
    state: Literal["normal", "unack_active", "ack_active", "rtn_unack"]
    active: bool
    acked: bool
    occurrence: str | None = Field(description="Event id of the current occurrence.")
    activated_at: datetime | None
    activations: int
    message: str
    value: JsonValue
    acked_by: str | None
    acked_at: datetime | None
    ack_comment: str | None
    shelved_until: datetime | None


class ParetoRow(_Out):
    """Downtime of one reason (or state) within the range."""

    key: str
    events: int
    seconds: float
    share: float
    cumulative_share: float


class DowntimeRecordOut(_Out):
    """What recording downtime stored, per equipment."""

    equipment: dict[str, int] = Field(description="Equipment path → downtime events stored.")


class DeadLetterOut(_Out):
    """Something that arrived but could not be mapped or parsed."""

    received_at: datetime
    source: str
    location: str | None
    reason: str
    payload_text: str | None = Field(description="The payload when it is UTF-8 text.")
    payload_base64: str | None = Field(description="The payload when it is binary.")


class SetpointIn(BaseModel):
    """A value to write to a setpoint, in the signal's engineering unit."""

    model_config = ConfigDict(extra="forbid")

    value: JsonValue


class SetpointOut(_Out):
    """A setpoint write the connector accepted."""

    signal: str
    value: JsonValue = Field(description="In the signal's engineering unit.")
    raw_value: JsonValue = Field(description="As sent to the device (binding scale undone).")
    connection: str
    address: str
    written_at: datetime
    by: str


class AuditOut(_Out):
    """One row of the append-only audit log."""

    seq: int
    ts: datetime
    token_id: str | None
    method: str
    path: str
    status: int
    client: str | None
    detail: dict[str, Any] | None
