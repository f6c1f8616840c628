"""FastAPI layer for riders, fleet ops and admins."""
