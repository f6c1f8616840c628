"""Geofence evaluation in the hub: fixes in, enter and exit transitions out.

    engine = GeofenceEngine(load_active_geofences(conn))
    engine.load_state(load_geofence_states(conn), load_last_positions(conn))
    transitions = engine.evaluate(batch.rows)
    save_geofence_states(conn, engine.dirty_states())

See docs/geofences.md for the rules.
"""

from hub.geofences.engine import GeofenceEngine
from hub.geofences.index import Depth, FenceIndex
from hub.geofences.model import (
    Cause,
    EngineStats,
    Fix,
    GeofenceTransition,
    SpeedLimit,
    TransitionKind,
)

__all__ = [
    "Cause",
    "Depth",
    "EngineStats",
    "FenceIndex",
    "Fix",
    "GeofenceEngine",
    "GeofenceTransition",
    "SpeedLimit",
    "TransitionKind",
]
