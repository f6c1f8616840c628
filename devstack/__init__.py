"""Throwaway PostgreSQL, Redis and MQTT broker for the demo and the tests."""
