"""Who may manage geofences: each endpoint names one of these."""

from __future__ import annotations

from api.deps import RequireStaff

GeofenceManager = RequireStaff
"""Fleet managers and admins draw the service area and the zones; riders never see them."""
