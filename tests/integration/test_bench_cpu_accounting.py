"""The benchmark's CPU readings: a process tree's time counts children that have already
exited, which is how Postgres backends that closed mid-scenario stay in its share."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from bench.stack import cpu_seconds, tree_cpu_seconds
from infrastructure.embedded import EmbeddedPostgres

# A child that starts a grandchild burning ~0.4 s of CPU, waits for it (reaping it), then
# idles until it is told to stop.
_PARENT = """
import subprocess, sys
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.4\\n"
                "while time.process_time() < end: pass"], check=True)
print("reaped", flush=True)
sys.stdin.read()
"""


def test_a_tree_counts_a_child_that_has_exited() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "reaped"
        own = cpu_seconds(parent.pid)
        tree = tree_cpu_seconds(parent.pid)
        assert tree - own >= 0.35, (own, tree)
    finally:
        parent.communicate("", timeout=10)


def test_postgres_work_shows_in_the_servers_tree(embedded_postgres: EmbeddedPostgres) -> None:
    pid = embedded_postgres.postmaster_pid()
    before = tree_cpu_seconds(pid)
    # A backend of its own that works, then goes away before the second reading.
    with psycopg.connect(embedded_postgres.uri(), autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
        assert time.monotonic() - started > 0.05
    time.sleep(0.2)  # the postmaster reaps the backend
    spent = tree_cpu_seconds(pid) - before
    assert spent >= 0.05, spent


pytestmark = pytest.mark.integration
