"""Throwaway PostgreSQL, Redis and MQTT broker for the demo and the tests.

Start with `devstack.stack.start_stack`; `freecar devstack` is the command-line face and
`tests/conftest.py` the pytest one. This package file imports nothing, so the CLI and the
watchdog (`python -m devstack.watchdog`) stay light. See docs/devstack.md.
"""
