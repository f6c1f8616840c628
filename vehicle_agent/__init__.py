"""In-car unit: reads GPS and vehicle status, publishes telemetry, executes signed commands."""
