"""Every job the engine runs, declared once: its name (what arq, the records and the API call it), its
queue, and whether an admin may start it by hand. Code enqueues by these references and the job
functions are registered under them (`@job(REF)`), so a name is never spelled twice."""

from __future__ import annotations

from dataclasses import dataclass

POSITIONS = "positions"
REPORTS = "reports"
CLEANUP = "cleanup"
NOTIFICATIONS = "notifications"
COMMANDS = "commands"
QUEUES = (POSITIONS, REPORTS, CLEANUP, NOTIFICATIONS, COMMANDS)


@dataclass(frozen=True)
class JobRef:
    name: str
    queue: str
    by_hand: bool = False  # an admin may run it: POST /api/tasks/run/{name}


PROCESS_POSITION_BATCH = JobRef("process_position_batch", POSITIONS)
SWEEP_POSITION_PARTITIONS = JobRef("sweep_position_partitions", POSITIONS)
PROCESS_SINGLE_POSITION = JobRef("process_single_position", POSITIONS)
UPDATE_DEVICE_STATUS = JobRef("update_device_status", POSITIONS)
CALCULATE_DEVICE_STATISTICS = JobRef("calculate_device_statistics", POSITIONS)
CLEANUP_OLD_POSITIONS = JobRef("cleanup_old_positions", CLEANUP, by_hand=True)
CLEANUP_OLD_EVENTS = JobRef("cleanup_old_events", CLEANUP, by_hand=True)
CLEANUP_EXPIRED_SESSIONS = JobRef("cleanup_expired_sessions", CLEANUP, by_hand=True)
CLEANUP_CACHE = JobRef("cleanup_cache", CLEANUP, by_hand=True)
CLEANUP_DUPLICATE_POSITIONS = JobRef("cleanup_duplicate_positions", CLEANUP, by_hand=True)
CLEANUP_ORPHANED_DATA = JobRef("cleanup_orphaned_data", CLEANUP, by_hand=True)
OPTIMIZE_DATABASE = JobRef("optimize_database", CLEANUP, by_hand=True)
CREATE_PARTITIONS = JobRef("create_partitions", CLEANUP, by_hand=True)
CLEANUP_JOB_RECORDS = JobRef("cleanup_job_records", CLEANUP, by_hand=True)
PING = JobRef("ping", CLEANUP, by_hand=True)
SEND_WEBHOOK = JobRef("send_webhook", NOTIFICATIONS)
DELIVER_NOTIFICATIONS = JobRef("deliver_notifications", NOTIFICATIONS)
SWEEP_DELIVERIES = JobRef("sweep_deliveries", NOTIFICATIONS, by_hand=True)
SEND_GEOFENCE_ALERT = JobRef("send_geofence_alert", NOTIFICATIONS, by_hand=True)
SEND_DEVICE_OFFLINE_ALERT = JobRef("send_device_offline_alert", NOTIFICATIONS, by_hand=True)
SEND_SPEED_ALERT = JobRef("send_speed_alert", NOTIFICATIONS, by_hand=True)
SEND_MAINTENANCE_REMINDER = JobRef("send_maintenance_reminder", NOTIFICATIONS, by_hand=True)
SEND_DAILY_SUMMARY = JobRef("send_daily_summary", NOTIFICATIONS, by_hand=True)
SEND_DAILY_SUMMARIES = JobRef("send_daily_summaries", NOTIFICATIONS, by_hand=True)
SEND_SYSTEM_ALERT = JobRef("send_system_alert", NOTIFICATIONS, by_hand=True)
CHECK_SYSTEM_ALERTS = JobRef("check_system_alerts", NOTIFICATIONS, by_hand=True)
GENERATE_DEVICE_REPORT = JobRef("generate_device_report", REPORTS, by_hand=True)
GENERATE_FLEET_REPORT = JobRef("generate_fleet_report", REPORTS, by_hand=True)
EXPORT_REPORT_DATA = JobRef("export_report_data", REPORTS, by_hand=True)
GENERATE_DAILY_REPORTS = JobRef("generate_daily_reports", REPORTS, by_hand=True)
SEND_COMMAND = JobRef("send_command", COMMANDS)
EXPIRE_COMMANDS = JobRef("expire_commands", COMMANDS, by_hand=True)
RETRY_FAILED_COMMANDS = JobRef("retry_failed_commands", COMMANDS, by_hand=True)
RECORD_COMMAND_UPDATES = JobRef("record_command_updates", COMMANDS, by_hand=True)

# name -> reference, for what is known only by name (a task record to retry, a name in a URL).
JOBS: dict[str, JobRef] = {ref.name: ref for ref in list(globals().values()) if isinstance(ref, JobRef)}
