"""Events: detectors as pure state machines, and geofence geometry."""
