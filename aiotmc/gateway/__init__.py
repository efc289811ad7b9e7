"""``aiotmc gateway``: remote monitoring, alerts, central storage and remote control.

An application on top of the library (it may pick asyncio where its best client library
needs it; docs/gateway.md says where). :mod:`aiotmc.gateway.model` holds the shared data
types every part (sources, sinks, rules, MQTT, web, control) agrees on.
"""

from aiotmc.gateway.model import (
    Alert,
    AlertState,
    CommandRequest,
    CommandResult,
    Component,
    Controller,
    Event,
    GatewayStats,
    Hub,
    InstrumentState,
    InstrumentStats,
    Quality,
    Reading,
    Sink,
    StatusEvent,
)

__all__ = [
    "Alert",
    "AlertState",
    "CommandRequest",
    "CommandResult",
    "Component",
    "Controller",
    "Event",
    "GatewayStats",
    "Hub",
    "InstrumentState",
    "InstrumentStats",
    "Quality",
    "Reading",
    "Sink",
    "StatusEvent",
]
