# ruff: noqa: N815  # field names are the spec's JSON names (camelCase) on purpose
"""Pydantic models of the VDA 5050 messages (versions 2.0 and 1.1).

Field names are exactly those of the specification's JSON (camelCase) and of its JSON
schemas (``state.schema``, ``order.schema``, ``instantActions.schema``,
``connection.schema``, ``factsheet.schema``, ``visualization.schema``). Required and
optional fields follow VDA 5050 2.0; 1.1 messages parse with the same models (1.1 spells
the state's info array ``informations``, which is accepted too).

Unknown fields are kept (``extra="allow"``): vendors add fields, and later minor versions
add optional ones, neither of which may turn a valid message into a dead letter. Enum values
are checked as the spec lists them (``operatingMode``, ``errorLevel``, ``eStop``, …).

Timestamps are parsed into aware :class:`~datetime.datetime` objects and serialised as
``YYYY-MM-DDTHH:mm:ss.fffZ``, the spec's format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)

__all__ = [
    "VERSIONS",
    "Action",
    "ActionParameter",
    "ActionState",
    "AgvPosition",
    "BatteryState",
    "BoundingBoxReference",
    "Connection",
    "ControlPoint",
    "Edge",
    "EdgeState",
    "Error",
    "ErrorReference",
    "Factsheet",
    "Header",
    "Info",
    "InfoReference",
    "InstantActions",
    "Load",
    "LoadDimensions",
    "Node",
    "NodePosition",
    "NodeState",
    "Order",
    "SafetyState",
    "State",
    "Trajectory",
    "Velocity",
    "Visualization",
    "format_timestamp",
]

VERSIONS: dict[str, str] = {"v2": "2.0.0", "v1": "1.1.0"}
"""The ``version`` header this implementation sends, by topic major version."""


def format_timestamp(ts: datetime) -> str:
    """``ts`` as the spec's ISO 8601 UTC text, e.g. ``2017-04-15T11:40:03.123Z``."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, return_type=str)]
"""An ISO 8601 timestamp with a time zone (the spec's messages are UTC, ``…Z``)."""

OperatingMode = Literal["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL", "SERVICE", "TEACHIN"]
ErrorLevel = Literal["WARNING", "FATAL"]
InfoLevel = Literal["INFO", "DEBUG"]
EStop = Literal["AUTOACK", "MANUAL", "REMOTE", "NONE"]
ActionStatus = Literal["WAITING", "INITIALIZING", "RUNNING", "PAUSED", "FINISHED", "FAILED"]
BlockingType = Literal["NONE", "SOFT", "HARD"]
ConnectionState = Literal["ONLINE", "OFFLINE", "CONNECTIONBROKEN"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> bytes:
        """The message as compact JSON (fields that are ``None`` are left out)."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class Header(_Model):
    """The header every message carries (it is not a JSON object of its own)."""

    headerId: int = Field(ge=0)
    timestamp: Timestamp
    version: str
    manufacturer: str
    serialNumber: str


# --------------------------------------------------------------------------- shared parts


class NodePosition(_Model):
    """Where a node is on a map (order ``node.nodePosition``)."""

    x: float
    y: float
    theta: float | None = None
    allowedDeviationXY: float | None = None
    allowedDeviationTheta: float | None = None
    mapId: str
    mapDescription: str | None = None


class ControlPoint(_Model):
    """A NURBS control point."""

    x: float
    y: float
    weight: float | None = None
    orientation: float | None = None


class Trajectory(_Model):
    """A NURBS trajectory of an edge."""

    degree: float | None = None
    knotVector: list[float]
    controlPoints: list[ControlPoint]


class ActionParameter(_Model):
    """A key/value parameter of an action."""

    key: str
    value: Any


class Action(_Model):
    """An action on a node, an edge, or sent as an instant action."""

    actionType: str
    actionId: str
    actionDescription: str | None = None
    blockingType: BlockingType
    actionParameters: list[ActionParameter] | None = None


# --------------------------------------------------------------------------- order


class Node(_Model):
    """A node of an order."""

    nodeId: str
    sequenceId: int = Field(ge=0)
    nodeDescription: str | None = None
    released: bool
    nodePosition: NodePosition | None = None
    actions: list[Action] = Field(default_factory=list)


class Edge(_Model):
    """A directed edge of an order between two nodes."""

    edgeId: str
    sequenceId: int = Field(ge=0)
    edgeDescription: str | None = None
    released: bool
    startNodeId: str
    endNodeId: str
    maxSpeed: float | None = None
    maxHeight: float | None = None
    minHeight: float | None = None
    orientation: float | None = None
    orientationType: str | None = None
    direction: str | None = None
    rotationAllowed: bool | None = None
    maxRotationSpeed: float | None = None
    trajectory: Trajectory | None = None
    length: float | None = None
    actions: list[Action] = Field(default_factory=list)


class Order(Header):
    """``order``: master control → vehicle, a graph of nodes and edges to traverse."""

    orderId: str
    orderUpdateId: int = Field(ge=0)
    zoneSetId: str | None = None
    nodes: list[Node]
    edges: list[Edge]


class InstantActions(Header):
    """``instantActions``: master control → vehicle, actions to run at once.

    1.1 vehicles and tools also use the key ``instantActions`` for the array; it is read as
    ``actions``.
    """

    actions: list[Action] = Field(validation_alias=AliasChoices("actions", "instantActions"))


# --------------------------------------------------------------------------- state


class NodeState(_Model):
    """A node the vehicle still has to traverse."""

    nodeId: str
    sequenceId: int
    nodeDescription: str | None = None
    nodePosition: NodePosition | None = None
    released: bool


class EdgeState(_Model):
    """An edge the vehicle still has to traverse."""

    edgeId: str
    sequenceId: int
    edgeDescription: str | None = None
    released: bool
    trajectory: Trajectory | None = None


class AgvPosition(_Model):
    """The vehicle's position on a map."""

    x: float
    y: float
    theta: float
    mapId: str
    mapDescription: str | None = None
    positionInitialized: bool
    localizationScore: float | None = Field(default=None, ge=0.0, le=1.0)
    deviationRange: float | None = None


class Velocity(_Model):
    """The vehicle's velocity in vehicle coordinates."""

    vx: float | None = None
    vy: float | None = None
    omega: float | None = None


class BoundingBoxReference(_Model):
    """Reference point of a load's bounding box."""

    x: float
    y: float
    z: float
    theta: float | None = None


class LoadDimensions(_Model):
    """Dimensions of a load's bounding box in metres."""

    length: float
    width: float
    height: float | None = None


class Load(_Model):
    """A load the vehicle carries."""

    loadId: str | None = None
    loadType: str | None = None
    loadPosition: str | None = None
    boundingBoxReference: BoundingBoxReference | None = None
    loadDimensions: LoadDimensions | None = None
    weight: float | None = Field(default=None, ge=0.0)


class ActionState(_Model):
    """Progress of one action."""

    actionId: str
    actionType: str | None = None
    actionDescription: str | None = None
    actionStatus: ActionStatus
    resultDescription: str | None = None


class BatteryState(_Model):
    """Battery information."""

    batteryCharge: float
    batteryVoltage: float | None = None
    batteryHealth: float | None = Field(default=None, ge=0, le=100)
    charging: bool
    reach: float | None = Field(default=None, ge=0)


class ErrorReference(_Model):
    """A reference (nodeId, orderId, actionId, …) that helps find an error's cause."""

    referenceKey: str
    referenceValue: str


class Error(_Model):
    """An active error or warning of the vehicle."""

    errorType: str
    errorReferences: list[ErrorReference] | None = None
    errorDescription: str | None = None
    errorLevel: ErrorLevel


class InfoReference(_Model):
    """A reference of an info object."""

    referenceKey: str
    referenceValue: str


class Info(_Model):
    """An information object (for visualisation and debugging only)."""

    infoType: str
    infoReferences: list[InfoReference] | None = None
    infoDescription: str | None = None
    infoLevel: InfoLevel


class SafetyState(_Model):
    """Safety information."""

    eStop: EStop
    fieldViolation: bool


class State(Header):
    """``state``: vehicle → master control, the vehicle's whole state."""

    orderId: str
    orderUpdateId: int = Field(ge=0)
    zoneSetId: str | None = None
    lastNodeId: str
    lastNodeSequenceId: int = Field(ge=0)
    nodeStates: list[NodeState]
    edgeStates: list[EdgeState]
    agvPosition: AgvPosition | None = None
    velocity: Velocity | None = None
    loads: list[Load] | None = None
    driving: bool
    paused: bool | None = None
    newBaseRequest: bool | None = None
    distanceSinceLastNode: float | None = None
    actionStates: list[ActionState]
    batteryState: BatteryState
    operatingMode: OperatingMode
    errors: list[Error]
    information: list[Info] | None = Field(
        default=None, validation_alias=AliasChoices("information", "informations")
    )
    safetyState: SafetyState


# --------------------------------------------------------------------------- other topics


class Connection(Header):
    """``connection``: the vehicle's MQTT connection state (the Will is CONNECTIONBROKEN)."""

    connectionState: ConnectionState


class Visualization(Header):
    """``visualization``: position and velocity at a higher rate, for displays."""

    agvPosition: AgvPosition | None = None
    velocity: Velocity | None = None


class TypeSpecification(_Model):
    """Factsheet: class and capabilities of the vehicle type."""

    seriesName: str
    seriesDescription: str | None = None
    agvKinematic: str
    agvClass: str
    maxLoadMass: float = Field(ge=0)
    localizationTypes: list[str]
    navigationTypes: list[str]


class PhysicalParameters(_Model):
    """Factsheet: basic physical properties of the vehicle."""

    speedMin: float
    speedMax: float
    accelerationMax: float
    decelerationMax: float
    heightMin: float | None = None
    heightMax: float
    width: float
    length: float


class Factsheet(Header):
    """``factsheet`` (2.0): what the vehicle type is and can do.

    ``typeSpecification`` and ``physicalParameters`` are modelled; the larger sections
    (``protocolLimits``, ``protocolFeatures``, ``agvGeometry``, ``loadSpecification``,
    ``vehicleConfig``) are kept as JSON objects.
    """

    typeSpecification: TypeSpecification
    physicalParameters: PhysicalParameters
    protocolLimits: dict[str, Any] | None = None
    protocolFeatures: dict[str, Any] | None = None
    agvGeometry: dict[str, Any] | None = None
    loadSpecification: dict[str, Any] | None = None
    localizationParameters: dict[str, Any] | None = None
    vehicleConfig: dict[str, Any] | None = None
