"""Virtual fleet: many agents with simulated sensors, for testers, the demo and load tests."""
