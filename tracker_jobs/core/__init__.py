"""The core every other layer stands on: settings, database, Redis, serialization, geometry, input
checks and the error family, and telling every process of access changes."""
