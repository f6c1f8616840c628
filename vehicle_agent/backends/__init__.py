"""Where the agent's readings come from and how it moves the car's locks: sim, gpsd, CAN."""
