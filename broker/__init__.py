"""Mosquitto configuration and per-vehicle credential provisioning."""
