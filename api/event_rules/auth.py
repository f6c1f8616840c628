"""Who may manage event rules: each endpoint names one of these."""

from __future__ import annotations

from api.deps import RequireStaff

EventRuleManager = RequireStaff
"""Fleet managers and admins decide who hears of an event and what the car is told to do."""
