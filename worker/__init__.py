"""Celery app and background tasks (OCR, invoices, notifications, sweeps)."""
