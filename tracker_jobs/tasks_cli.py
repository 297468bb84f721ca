"""`tracker-jobs tasks status | queues | workers | stats | list | show | cancel | retry | run`: the task API
from a shell, as tables or `--json`. It talks HTTP to the admin API (--url, default the local one) with
--token or TRACKER_ADMIN_TOKEN."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from tracker_jobs.core.config import Settings

TERMINAL_STATES = ("complete", "failed", "cancelled")
WAIT_POLL_S = 0.25
BAR_WIDTH = 30
HTTP_TIMEOUT_S = 30


class TasksCommandFailed(RuntimeError):
    """The admin API answered with an error, or could not be reached; the message says which."""


class AdminApi:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, query: Sequence[tuple[str, str]] = ()) -> Any:
        url = f"{self.url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(list(query))
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 -- http(s) URL from --url
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            hint = _UNAUTHORIZED_HINT if error.code == 401 else ""
            raise TasksCommandFailed(f"{method} {path}: {error.code} {_error_message(error)}{hint}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TasksCommandFailed(f"cannot reach the admin API at {self.url}: {reason}") from None
        return json.loads(raw) if raw else None


_UNAUTHORIZED_HINT = (
    ". Give an admin's API token with --token or TRACKER_ADMIN_TOKEN "
    "(`tracker-jobs token` prints a new one for the admin admin@localhost)"
)


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason)


def add_parser(commands: Any) -> None:
    """Register `tasks` and its subcommands on the main parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="admin API address (default http://127.0.0.1:$TRACKER_ADMIN_PORT)")
    common.add_argument("--token", help="API token (default $TRACKER_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks = commands.add_parser("tasks", help="see and steer jobs through the admin API")
    actions = tasks.add_subparsers(dest="tasks_command", required=True)
    actions.add_parser("status", parents=[common], help="counts per queue and state, workers, running jobs")
    actions.add_parser("queues", parents=[common], help="each queue's backlog")
    actions.add_parser("workers", parents=[common], help="each worker process")
    stats = actions.add_parser("stats", parents=[common], help="counts, failure rate, durations per job")
    stats.add_argument("--window", choices=["1h", "24h"], default="1h")
    listing = actions.add_parser("list", parents=[common], help="task records, newest first")
    listing.add_argument("--state", action="append", default=[], help="only this state (may repeat)")
    listing.add_argument("--name", help="only this job")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument("--from", dest="start", help="enqueued at or after (ISO-8601)")
    listing.add_argument("--to", dest="end", help="enqueued at or before (ISO-8601)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    for name, what in (("show", "one task's record"), ("cancel", "cancel a task"), ("retry", "retry a failed task")):
        actions.add_parser(name, parents=[common], help=what).add_argument("task_id")
    run = actions.add_parser("run", parents=[common], help="run a job by hand")
    run.add_argument("job_name")
    run.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="a job argument (may repeat)")
    run.add_argument("--wait", action="store_true", help="follow the job's progress until it ends")
    tasks.set_defaults(run=cmd_tasks)


def cmd_tasks(settings: Settings, args: argparse.Namespace) -> int:
    api = AdminApi(args.url or f"http://127.0.0.1:{settings.admin_port}", args.token or settings.admin_token)
    command: Callable[[AdminApi, argparse.Namespace], int] = COMMANDS[args.tasks_command]
    try:
        return command(api, args)
    except TasksCommandFailed as error:
        print(f"tracker-jobs: {error}", file=sys.stderr, flush=True)
        return 1


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2), flush=True)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(headers[index]) for index in range(len(headers))]]
    cells += [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _show(args: argparse.Namespace, data: Any, table: Callable[[Any], None]) -> int:
    if args.json:
        _print_json(data)
    else:
        table(data)
    return 0


def status(api: AdminApi, args: argparse.Namespace) -> int:
    def table(data: dict[str, Any]) -> None:
        states = ["queued", "in_progress", "retrying", "complete", "failed", "cancelled"]
        _print_table(
            ["QUEUE", *(state.upper() for state in states)],
            [[queue, *(counts.get(state, 0) for state in states)] for queue, counts in data["queues"].items()],
        )
        print(f"\nworkers: {data['workers']['live']} live, {data['workers']['lost']} lost")
        if data["running"]:
            print("\nrunning now:")
            _print_table(
                ["ID", "NAME", "WORKER", "STARTED", "PROGRESS"],
                [
                    [task["id"], task["name"], task["worker"], task["startedAt"], _percent(task)]
                    for task in data["running"]
                ],
            )

    return _show(args, api.call("GET", "/api/tasks/status"), table)


def queues(api: AdminApi, args: argparse.Namespace) -> int:
    def table(data: list[dict[str, Any]]) -> None:
        _print_table(
            ["QUEUE", "LENGTH", "WAITING", "RUNNING", "DEFERRED", "OLDEST_WAITING_S", "WORKERS"],
            [
                [
                    queue["name"],
                    queue["length"],
                    queue["waiting"],
                    queue["running"],
                    queue["deferred"],
                    queue["oldestWaitingAgeS"],
                    queue["workers"],
                ]
                for queue in data
            ],
        )

    return _show(args, api.call("GET", "/api/tasks/queues"), table)


def workers(api: AdminApi, args: argparse.Namespace) -> int:
    def table(data: list[dict[str, Any]]) -> None:
        _print_table(
            ["WORKER", "STATE", "QUEUES", "RUNNING", "DONE", "FAILED", "LAST_HEARTBEAT"],
            [
                [
                    worker["id"],
                    worker["state"],
                    ",".join(worker["queues"]),
                    len(worker["running"]),
                    worker["done"],
                    worker["failed"],
                    worker["lastHeartbeat"],
                ]
                for worker in data
            ],
        )

    return _show(args, api.call("GET", "/api/tasks/workers"), table)


def stats(api: AdminApi, args: argparse.Namespace) -> int:
    def table(data: list[dict[str, Any]]) -> None:
        _print_table(
            [
                "NAME",
                "QUEUE",
                "COMPLETE",
                "FAILED",
                "CANCELLED",
                "RETRIED",
                "FAILURE_RATE",
                "P50_S",
                "P95_S",
                "MAX_S",
                "PER_MIN",
            ],
            [
                [
                    entry["name"],
                    entry["queue"],
                    entry["counts"]["complete"],
                    entry["counts"]["failed"],
                    entry["counts"]["cancelled"],
                    entry["counts"]["retried"],
                    entry["failureRate"],
                    entry["durationS"]["p50"],
                    entry["durationS"]["p95"],
                    entry["durationS"]["max"],
                    entry["throughputPerMin"],
                ]
                for entry in data
            ],
        )

    return _show(args, api.call("GET", "/api/tasks/stats", query=[("window", args.window)]), table)


def list_tasks(api: AdminApi, args: argparse.Namespace) -> int:
    query = [("state", state) for state in args.state]
    query += [
        (key, value)
        for key, value in (("name", args.name), ("queue", args.queue), ("from", args.start), ("to", args.end))
        if value
    ]
    query += [("limit", str(args.limit)), ("offset", str(args.offset))]

    def table(data: list[dict[str, Any]]) -> None:
        _print_table(
            ["ID", "NAME", "QUEUE", "STATE", "ENQUEUED", "TRIES", "PROGRESS"],
            [
                [
                    task["id"],
                    task["name"],
                    task["queue"],
                    task["state"],
                    task["enqueuedAt"],
                    task["tries"],
                    _percent(task),
                ]
                for task in data
            ],
        )

    return _show(args, api.call("GET", "/api/tasks", query=query), table)


def show(api: AdminApi, args: argparse.Namespace) -> int:
    return _show(args, api.call("GET", f"/api/tasks/task/{_quoted(args.task_id)}"), _print_task)


def cancel(api: AdminApi, args: argparse.Namespace) -> int:
    return _show(args, api.call("DELETE", f"/api/tasks/task/{_quoted(args.task_id)}"), _print_task)


def retry(api: AdminApi, args: argparse.Namespace) -> int:
    accepted = api.call("POST", f"/api/tasks/task/{_quoted(args.task_id)}/retry")
    return _show(args, accepted, lambda data: print(f"retried {args.task_id} as {data['task_id']}"))


def run(api: AdminApi, args: argparse.Namespace) -> int:
    arguments = parse_arguments(args.arg, _parameter_types(api, args.job_name))
    accepted = api.call("POST", f"/api/tasks/run/{_quoted(args.job_name)}", body=arguments)
    task_id = accepted["task_id"]
    if not args.wait:
        return _show(args, accepted, lambda data: print(f"enqueued {args.job_name} as {data['task_id']}"))
    task = follow(api, task_id)
    _show(args, task, _print_task)
    return 0 if task["state"] == "complete" else 1


def follow(api: AdminApi, task_id: str) -> dict[str, Any]:
    """Poll the task until it ends, drawing its progress bar on stderr; return its last record."""
    while True:
        task: dict[str, Any] = api.call("GET", f"/api/tasks/task/{_quoted(task_id)}")
        percent = float(task["progress"]["percent"])
        filled = int(BAR_WIDTH * min(percent, 100.0) / 100)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        print(
            f"\r[{bar}] {percent:5.1f}% {task['state']:<11} {task['progress']['message'][:40]:<40}",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if task["state"] in TERMINAL_STATES:
            print(file=sys.stderr, flush=True)
            return task
        time.sleep(WAIT_POLL_S)


def _parameter_types(api: AdminApi, job_name: str) -> dict[str, str]:
    for runnable in api.call("GET", "/api/tasks/jobs"):
        if runnable["name"] == job_name:
            return {parameter["name"]: parameter["type"] for parameter in runnable["parameters"]}
    return {}


def parse_arguments(pairs: Sequence[str], types: dict[str, str]) -> dict[str, Any]:
    """`key=value` pairs as the job's declared types want them (text stays text, `5` for a number is 5)."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator or not key:
            raise TasksCommandFailed(f"--arg {pair!r}: expected KEY=VALUE")
        arguments[key] = _typed(raw, types.get(key, "any"))
    return arguments


def _typed(raw: str, type_name: str) -> Any:
    kinds = type_name.split(" | ")
    if raw == "null" and "null" in kinds:
        return None
    for kind in kinds:
        if kind == "string":
            return raw
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw)
            if kind == "boolean" and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
        except ValueError:
            continue
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _percent(task: dict[str, Any]) -> str:
    return f"{float(task['progress']['percent']):.0f}%"


def _print_task(task: dict[str, Any]) -> None:
    fields = [
        ("id", task["id"]),
        ("name", task["name"]),
        ("queue", task["queue"]),
        ("state", task["state"]),
        ("args", json.dumps(task["args"])),
        ("user", task["userId"]),
        ("enqueued", task["enqueuedAt"]),
        ("started", task["startedAt"]),
        ("finished", task["finishedAt"]),
        ("duration_s", task["durationS"]),
        ("tries", task["tries"]),
        ("worker", task["worker"]),
        ("progress", f"{_percent(task)} {task['progress']['message']}".rstrip()),
        ("result", None if task["result"] is None else json.dumps(task["result"])),
        ("retried_as", task["retriedAs"]),
    ]
    error = task["error"]
    if error is not None:
        fields.append(("error", f"{error['type']}: {error['message']}"))
    for name, value in fields:
        print(f"{name + ':':<12}{'-' if value is None else value}")
    if error is not None and error.get("traceback"):
        print(error["traceback"].rstrip())


COMMANDS: dict[str, Callable[[AdminApi, argparse.Namespace], int]] = {
    "status": status,
    "queues": queues,
    "workers": workers,
    "stats": stats,
    "list": list_tasks,
    "show": show,
    "cancel": cancel,
    "retry": retry,
    "run": run,
}
