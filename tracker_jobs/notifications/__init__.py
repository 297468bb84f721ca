"""Notifications: rules, channels (web, email, webhook) and what was sent."""
