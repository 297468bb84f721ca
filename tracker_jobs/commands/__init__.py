"""Device commands: queued for a device, delivered in its next OsmAnd reply or through its gateway,
expired when stale, each result tied to its command."""
