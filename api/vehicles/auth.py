"""Who may do what with vehicles: each endpoint names one of these."""

from __future__ import annotations

from api.deps import CurrentUser, RequireStaff

VehicleSearcher = CurrentUser
"""Riders search and look at vehicles; staff do too (and see exact positions)."""
MaintenanceManager = RequireStaff
"""Fleet managers and admins schedule and cancel maintenance windows."""
