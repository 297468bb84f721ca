"""Report files stored in the database in parts, so neither storing nor serving one needs it whole in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.db import transaction
from tracker_jobs.reports.models import ReportFile

PART_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    content_type: str
    size: int
    parts: int


async def delete_files(session: AsyncSession, report_id: int, fmt: str | None = None) -> None:
    query = sa.delete(ReportFile).where(col(ReportFile.report_id) == report_id)
    if fmt is not None:
        query = query.where(col(ReportFile.format) == fmt)
    await session.execute(query)


async def store_file(
    sessions: async_sessionmaker[AsyncSession], report_id: int, fmt: str, content_type: str, path: Path
) -> int:
    """Store a file part by part (a transaction each, so SQLite writers are not held up); return its size.

    The caller lists the format in the report's `formats` only after this returns: parts left by a
    crash are never served, and the next attempt deletes them first.
    """
    async with transaction(sessions) as session:
        await delete_files(session, report_id, fmt)
    size = part = 0
    with path.open("rb") as source:
        while True:
            content = source.read(PART_BYTES)
            async with transaction(sessions) as session:
                session.add(
                    ReportFile(
                        report_id=report_id,
                        format=fmt,
                        part=part,
                        content_type=content_type,
                        content=content,
                        size=len(content),
                    )
                )
            size, part = size + len(content), part + 1
            if len(content) < PART_BYTES:
                break
    return size


async def stored_file(session: AsyncSession, report_id: int, fmt: str) -> StoredFile | None:
    query = (
        select(col(ReportFile.content_type), sa.func.sum(col(ReportFile.size)), sa.func.count())
        .where(col(ReportFile.report_id) == report_id, col(ReportFile.format) == fmt)
        .group_by(col(ReportFile.content_type))
    )
    row = (await session.execute(query)).first()
    return None if row is None else StoredFile(row[0], int(row[1]), int(row[2]))


async def read_parts(sessions: async_sessionmaker[AsyncSession], report_id: int, fmt: str) -> AsyncIterator[bytes]:
    """The file's bytes, one part (one query) at a time."""
    async with sessions() as session:
        stored = await stored_file(session, report_id, fmt)
    for part in range(stored.parts if stored else 0):
        async with sessions() as session:
            query = select(col(ReportFile.content)).where(
                col(ReportFile.report_id) == report_id, col(ReportFile.format) == fmt, col(ReportFile.part) == part
            )
            content: bytes = (await session.execute(query)).scalar_one()
        yield content


async def save_to(sessions: async_sessionmaker[AsyncSession], report_id: int, fmt: str, path: Path) -> None:
    with path.open("wb") as target:
        async for content in read_parts(sessions, report_id, fmt):
            target.write(content)
