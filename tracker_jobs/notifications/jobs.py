"""Jobs of the notifications queue."""

from __future__ import annotations

from typing import Any

from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.notifications.channels import post_webhook


@job(refs.SEND_WEBHOOK, timeout_s=60, max_tries=8)
async def send_webhook(ctx: dict[str, Any], url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Deliver one notification to a webhook; retried with backoff while the receiver fails."""
    status = await post_webhook(url, payload)
    return {"url": url, "status": status}
