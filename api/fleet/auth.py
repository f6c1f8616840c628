"""Who may manage the fleet: each endpoint names one of these."""

from __future__ import annotations

from api.deps import RequireStaff

FleetStaff = RequireStaff
"""Fleet managers and admins run the fleet: vehicles, bulk changes, photos, logins."""
