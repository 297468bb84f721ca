"""Reports: trips/stops detection, builders, exporters."""
