"""Riders' vehicle search, details and availability; staff's maintenance windows."""
