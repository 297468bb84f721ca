"""tracker_jobs: the background-job engine of a GPS fleet-tracking platform."""

__version__ = "0.1.0"
