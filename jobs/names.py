"""The names of the worker's tasks: the contract between their senders and the worker."""

from __future__ import annotations

from typing import Final

PING_TASK: Final = "worker.ping"
"""Answers "pong": proves a worker consumes the queue."""
NOTIFY_EVENT_TASK: Final = "worker.notify_event"
"""Sends an event's notifications (the hub queues it after the event's commit)."""
NOTIFY_PENDING_TASK: Final = "worker.notify_pending"
"""The sweep for notifications whose task never arrived (run by the beat)."""
VEHICLE_IMAGE_VARIANTS_TASK: Final = "worker.vehicle_image_variants"
"""Makes a vehicle photo's thumbnails (the API queues it after the upload's commit)."""
