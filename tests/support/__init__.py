"""What the test suites share: bounded waits, the inventory, running hubs.

Each suite's own `*_testing.py` keeps what only it needs; anything two suites need lives here,
once.
"""
