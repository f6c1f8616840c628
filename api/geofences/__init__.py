"""Geofence definitions for fleet managers and admins: /v1/admin/geofences."""
