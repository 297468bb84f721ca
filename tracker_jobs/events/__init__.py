"""Events: geofences (their WKT, membership of many points at once, the API and device links) and the
events table. The geofence detector runs in the position pipeline (positions/geofencing.py); the
other detectors come with the rest of the events issue."""
