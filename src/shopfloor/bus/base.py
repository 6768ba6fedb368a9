"""The bus interface: edges publish batches, workers pull them and acknowledge each.

One interface, several engines (as httpx has one client and many transports): the in-process
:mod:`~shopfloor.bus.memory` bus, shipped beside the real one as its fake and used by tests,
and NATS JetStream (:mod:`~shopfloor.bus.nats`), the scale-out path. The embedded default
(``shopfloor up``) needs no bus at all: connectors feed the pipeline directly.

A message is an opaque payload (an Arrow IPC batch, :mod:`shopfloor.bus.codec`) with

* a **key** — ``<edge>.<partition>``: the engine keeps messages of one key in publish
  order (NATS: the subject ``shopfloor.ingest.<edge>.<partition>``);
* a **batch id** — unique per batch (an edge uses ``<buffer id>-<seq>``). The engine drops a
  republished id it still remembers (NATS: ``Nats-Msg-Id`` within the stream's duplicate
  window), and the historian records the id in the transaction that stores the batch
  (:meth:`~shopfloor.historian.Historian.append_once`), so a batch delivered twice is
  stored once whatever the window.

Delivery is at least once: a worker acknowledges a message after the historian committed
it; a message not acknowledged within the consumer's ``ack_wait`` goes to another worker.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

__all__ = [
    "INGEST_SUBJECT",
    "Consumer",
    "ConsumerState",
    "Delivery",
    "Publisher",
    "bus_key",
    "subject_token",
]

INGEST_SUBJECT: Final = "shopfloor.ingest"
"""Prefix of the subjects batches are published on: ``shopfloor.ingest.<edge>.<partition>``."""

_BAD_TOKEN: Final = re.compile(r"[^A-Za-z0-9_-]+")


def subject_token(name: str) -> str:
    """``name`` as one subject token: runs of anything but letters, digits, ``_`` and ``-``
    become ``_`` (NATS subjects split at ``.`` and reserve ``*`` and ``>``)."""
    token = _BAD_TOKEN.sub("_", name).strip("_")
    return token or "_"


def bus_key(edge: str, partition: str) -> str:
    """The message key of ``partition`` (a connection) of edge ``edge``."""
    return f"{subject_token(edge)}.{subject_token(partition)}"


class Delivery(ABC):
    """One message handed to a consumer, to be acknowledged once it is safely stored."""

    batch_id: str
    """The publisher's batch id."""
    key: str
    """The key it was published under (``<edge>.<partition>``)."""
    payload: bytes
    """The message body."""
    deliveries: int
    """How often the engine has delivered it (1 the first time)."""

    @abstractmethod
    async def ack(self) -> None:
        """Done: the engine forgets the message."""

    @abstractmethod
    async def nak(self, delay: float | None = None) -> None:
        """Not done: deliver it again (after ``delay`` seconds), perhaps to another worker."""

    @abstractmethod
    async def in_progress(self) -> None:
        """Still working on it: restart the engine's acknowledgement timer."""


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """The consumer group's backlog as the engine sees it."""

    pending: int
    """Messages not yet delivered to any worker."""
    ack_pending: int
    """Messages delivered and not yet acknowledged."""
    redelivered: int
    """Messages delivered more than once and not yet acknowledged."""


class Publisher(ABC):
    """Publishes batches; :meth:`publish` returns once the engine has stored the message."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    @abstractmethod
    def max_payload(self) -> int:
        """The largest payload the engine takes, in bytes."""

    @abstractmethod
    async def publish(self, key: str, batch_id: str, payload: bytes) -> bool:
        """Store one message durably; False when the engine dropped it as a duplicate id.

        Raises :class:`~shopfloor.errors.BusError` when the engine cannot take it now
        (unreachable, full): the caller keeps the batch and tries again later.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release the connection."""


class Consumer(ABC):
    """Pulls messages as one member of a durable consumer group."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def fetch(self, max_messages: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_messages`` messages, waiting at most ``wait_s`` s for the first.

        Returns ``[]`` when none came. Raises :class:`~shopfloor.errors.BusError` when the
        engine is unreachable. Messages of one key come in publish order, but several
        workers of a group may hold messages of one key at the same time.
        """

    @abstractmethod
    async def state(self) -> ConsumerState | None:
        """The group's backlog, or None when the engine cannot say right now."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group (unacknowledged messages go to other workers after ``ack_wait``)."""
