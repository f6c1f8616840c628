"""FreeCar: the distribution's shared core (settings and the `freecar` command)."""
