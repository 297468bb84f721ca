"""Monitor: job records, worker heartbeats, statistics and progress."""
