"""Server side of MQTT: ingest, live state, geofences and events, command dispatch."""
