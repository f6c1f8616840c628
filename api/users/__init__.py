"""Profiles (`/v1/me`) and the admins' user management (`/v1/admin/users`)."""
