"""What a delivery job raises when a try failed but another may succeed: the job base (jobs/base.py)
retries a ConnectionError with backoff. The channels themselves answer with an `Attempt`
(webhook.py's `post_signed`); a permanent failure is returned, never raised."""

from __future__ import annotations


class DeliveryFailed(ConnectionError):
    """The receiver could not be reached or answered with an error; worth another try."""
