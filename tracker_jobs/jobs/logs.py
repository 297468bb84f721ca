"""Log lines that name the running job (id and name, set by the job base), as text or JSON lines."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s%(job)s"
# (job id, job name) inside a job's task; arq runs each job in a task of its own, so it never leaks.
CURRENT_JOB: ContextVar[tuple[str, str] | None] = ContextVar("tracker_current_job", default=None)


class JobContextFilter(logging.Filter):
    """Adds `job_id` and `job_name` (None outside a job) and `job` (" [job name id]" or "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = CURRENT_JOB.get()
        record.job_id, record.job_name = current if current else (None, None)
        record.job = f" [job {current[1]} {current[0]}]" if current else ""
        return True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, job_id/job_name, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            line["job_id"] = job_id
            line["job_name"] = getattr(record, "job_name", None)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr at `level`, as `text` or `json` lines, each carrying the running job."""
    handler = logging.StreamHandler()
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonLineFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
