"""Events: the table of events detected from positions, and the geofences they refer to (the
detectors come with the events issue)."""
