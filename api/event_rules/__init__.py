"""What the hub does about events, for fleet managers and admins: /v1/admin/event-rules."""
