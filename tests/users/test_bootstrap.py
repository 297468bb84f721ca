"""Several admin processes starting at once on a new database all come up, with one bootstrap admin
holding the configured token (they race to create it; the losers try again and find it)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.support.processes import clean_env, tracker_jobs_command
from tracker_jobs.users.service import hash_token

BOOTSTRAP = (
    "from tracker_jobs.cli import bootstrap_admin; from tracker_jobs.core.config import load_settings; "
    "bootstrap_admin(load_settings())"
)


def test_admin_processes_starting_together_share_one_bootstrap_admin(tmp_path: Path) -> None:
    for round_ in range(2):
        database = tmp_path / f"fresh-{round_}.db"
        env = clean_env(TRACKER_DATABASE_URL=f"sqlite:///{database}", TRACKER_ADMIN_TOKEN="shared-token")
        subprocess.run(tracker_jobs_command("migrate"), cwd=tmp_path, env=env, check=True, capture_output=True)
        starting = [
            subprocess.Popen([sys.executable, "-c", BOOTSTRAP], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
            for _ in range(8)
        ]
        outcomes = [(process.communicate()[1], process.returncode) for process in starting]
        assert [error.decode()[-300:] for error, status in outcomes if status != 0] == []
        with closing(sqlite3.connect(database)) as connection:
            assert connection.execute("SELECT count(*) FROM users").fetchone() == (1,)
            assert connection.execute("SELECT count(*) FROM api_tokens").fetchone() == (1,)


def test_the_token_command_replaces_the_admins_token(tmp_path: Path) -> None:
    database = tmp_path / "tokens.db"
    env = clean_env(TRACKER_DATABASE_URL=f"sqlite:///{database}")
    subprocess.run(tracker_jobs_command("migrate"), cwd=tmp_path, env=env, check=True, capture_output=True)
    first = subprocess.run(tracker_jobs_command("token"), cwd=tmp_path, env=env, capture_output=True, text=True)
    second = subprocess.run(tracker_jobs_command("token"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (first.returncode, second.returncode) == (0, 0)
    tokens = [first.stdout.strip(), second.stdout.strip()]
    assert len(set(tokens)) == 2
    assert all(len(token) >= 32 for token in tokens)
    with closing(sqlite3.connect(database)) as connection:
        (stored,) = connection.execute("SELECT token_hash FROM api_tokens").fetchall()
    assert stored == (hash_token(tokens[1]),)  # only the new one lets anyone in
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE users SET role = 'user', disabled = 1")  # locked out
    restored = subprocess.run(tracker_jobs_command("token"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "is an admin again" in restored.stderr
    assert "is enabled again" in restored.stderr
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("SELECT role, disabled FROM users").fetchall() == [("admin", 0)]
    configured = clean_env(TRACKER_DATABASE_URL=f"sqlite:///{database}", TRACKER_ADMIN_TOKEN="chosen")
    refused = subprocess.run(
        tracker_jobs_command("token"), cwd=tmp_path, env=configured, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "TRACKER_ADMIN_TOKEN is set" in refused.stderr
