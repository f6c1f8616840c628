"""Who may read events: each endpoint names one of these."""

from __future__ import annotations

from api.deps import RequireStaff

EventsReader = RequireStaff
"""Fleet managers and admins follow what happens to the fleet; riders never see it."""
