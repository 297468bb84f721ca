"""Fixtures the notification tests share: a real SMTP server on a free port (its `inbox`) and a real
webhook receiver (`hook`). Settings pointing at them: tests.support.receivers.to_receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.receivers import Inbox, WebhookReceiver, smtp_server, webhook_receiver
from tracker_jobs.embedded import free_port


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def inbox(smtp_port: int) -> Iterator[Inbox]:
    with smtp_server(smtp_port) as found:
        yield found


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as found:
        yield found
