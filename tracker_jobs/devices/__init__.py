"""Devices: identity, access, live state, status and statistics."""
