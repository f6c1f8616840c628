"""Bundled road networks and service areas for `freecar sim --area CITY`."""
