"""Events the hub raised, for fleet managers and admins: /v1/admin/events."""
