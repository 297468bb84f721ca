"""Progress of long jobs (percent and a short message), kept in Redis under the job's id (fresh for
the API) and in the job's record (within a second, and for good)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tracker_jobs.core.redis import cache_key
from tracker_jobs.jobs.records import JOB_RECORDS

PROGRESS_TTL_S = 7 * 24 * 3600


def progress_key(job_id: str) -> str:
    return cache_key("job-progress", job_id)


async def report_progress(ctx: dict[str, Any], done: int, total: int, message: str = "") -> None:
    """Call from a job as it goes: `done` of `total` units (devices, rows) finished."""
    job_id = ctx.get("job_id")
    if not job_id:
        return
    percent = 100.0 if total <= 0 else round(100.0 * min(done, total) / total, 1)
    redis: Redis = ctx["redis"]
    key = progress_key(str(job_id))
    JOB_RECORDS.progressed(str(job_id), percent, message[:256])
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping={"percent": percent, "message": message[:256], "done": done, "total": total})
        pipe.expire(key, PROGRESS_TTL_S)
        await pipe.execute()


async def read_progress(redis: Redis, job_id: str) -> dict[str, Any] | None:
    raw: dict[bytes, bytes] = await redis.hgetall(progress_key(job_id))  # type: ignore[misc]
    if not raw:
        return None
    return {
        "percent": float(raw[b"percent"]),
        "message": raw[b"message"].decode(),
        "done": int(raw[b"done"]),
        "total": int(raw[b"total"]),
    }
