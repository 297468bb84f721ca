"""What tests share and are not tests themselves: the test services and settings, factories of users and
devices, the engine's real processes and workers, made-up traces and the reports' reference detection.
Test modules and conftest files import from here, never from one another."""
