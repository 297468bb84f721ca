"""Every job the engine has, with its function: each domain's jobs module registers its jobs under their
references (jobs/refs.py) when imported here. The worker serves them; the admin app reads their
signatures to run them by hand. Neither imports a jobs module for its side effects."""

from __future__ import annotations

from tracker_jobs.cleanup import jobs as cleanup_jobs
from tracker_jobs.commands import jobs as command_jobs
from tracker_jobs.jobs.base import REGISTRY, JobSpec
from tracker_jobs.monitor import jobs as monitor_jobs
from tracker_jobs.notifications import jobs as notification_jobs
from tracker_jobs.positions import jobs as position_jobs
from tracker_jobs.reports import jobs as report_jobs

JOB_MODULES = (cleanup_jobs, command_jobs, monitor_jobs, notification_jobs, position_jobs, report_jobs)


def job_specs() -> dict[str, JobSpec]:
    """Name -> the registered job, every one of the modules above (and any a test registers)."""
    return dict(REGISTRY)
