"""Who may do what with maintenance windows: each endpoint names one of these."""

from __future__ import annotations

from api.deps import RequireStaff

MaintenanceManager = RequireStaff
"""Fleet managers and admins schedule, list and cancel maintenance windows."""
