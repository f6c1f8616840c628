"""Maintenance windows: when a car cannot be booked (staff schedule them)."""
