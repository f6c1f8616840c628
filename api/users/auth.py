"""Who may do what with users: each endpoint names one of these."""

from __future__ import annotations

from api.deps import CurrentUser, RequireAdmin, RequireStaff

ProfileOwner = CurrentUser
"""Any signed-in account, acting on its own profile."""
UsersReader = RequireStaff
"""Fleet managers and admins look riders up (support calls, damage reports)."""
UsersManager = RequireAdmin
"""Only admins create staff, suspend, reactivate, or read an account's history."""
