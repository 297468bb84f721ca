"""What one try at a delivery came to, whichever the channel."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    ok: bool
    # Never worth another try (a 4xx other than 408/429, a refused address, a mailbox that does not
    # exist): the delivery is dead at once.
    permanent: bool = False
    error: str | None = None  # what went wrong, for the delivery log (bounded by the caller)


SENT = Attempt(ok=True)
