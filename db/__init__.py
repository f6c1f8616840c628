"""Migrations and the database access shared by the hub and the API."""
