"""Cleanup: the cleanup queue's jobs; today, removing expired login sessions (retention of positions,
events and caches comes with the cleanup issue)."""
