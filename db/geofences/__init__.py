"""Geofences: the definition shared by the API and the hub, its validation and its SQL."""

from db.geofences.model import (
    FeatureProblem,
    Geofence,
    GeofenceImportError,
    GeofenceKind,
    GeofenceSpec,
    GeofenceState,
    Schedule,
    VehiclePosition,
    specs_from_geojson,
)
from db.geofences.repository import (
    GEOFENCES_CHANNEL,
    LISTEN_GEOFENCES,
    delete_geofence,
    get_geofence,
    insert_geofence,
    list_geofences,
    load_active_geofences,
    load_geofence_states,
    load_last_positions,
    save_geofence_states,
    update_geofence,
)
from db.geofences.validation import GeometryError, GeometryErrorCode

__all__ = [
    "GEOFENCES_CHANNEL",
    "LISTEN_GEOFENCES",
    "FeatureProblem",
    "Geofence",
    "GeofenceImportError",
    "GeofenceKind",
    "GeofenceSpec",
    "GeofenceState",
    "GeometryError",
    "GeometryErrorCode",
    "Schedule",
    "VehiclePosition",
    "delete_geofence",
    "get_geofence",
    "insert_geofence",
    "list_geofences",
    "load_active_geofences",
    "load_geofence_states",
    "load_last_positions",
    "save_geofence_states",
    "specs_from_geojson",
    "update_geofence",
]
