"""Who may do what with vehicles: each endpoint names one of these."""

from __future__ import annotations

from api.deps import CurrentUser

VehicleSearcher = CurrentUser
"""Riders search and look at vehicles; staff do too (and see exact positions)."""
