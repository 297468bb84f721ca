"""Cleanup: retention of positions, events, sessions and cache."""
