"""Notifications about events: rules, templates, channels (email, webhook, SMS, push, rider)."""
