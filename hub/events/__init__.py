"""Events: what the hub notices about vehicles, stored, fanned out and acted on."""
