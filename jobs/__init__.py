"""Background jobs as their senders see them: task names and a send-only Celery producer.

The API and the hub queue work for the worker without importing it (and so without its
task modules and their dependencies): `jobs.names` says what a task is called, and
`jobs.producer` builds a Celery app that can only send.
"""
