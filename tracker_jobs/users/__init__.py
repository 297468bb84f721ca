"""Users, their sessions and API tokens."""
