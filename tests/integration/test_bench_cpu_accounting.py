"""The benchmark's CPU readings: a process tree's time counts its live children, and children
that have already exited (through the time their parent reaped), each once. That is how
Postgres backends that closed mid-scenario stay in its share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bench.stack import cpu_seconds, tree_cpu_seconds
from infrastructure.embedded import EmbeddedPostgres

# Burns about 0.4 s of CPU, then waits for a line on stdin.
_BURN = (
    "import sys, time\n"
    "end = time.process_time() + 0.4\n"
    "while time.process_time() < end: pass\n"
    "print('burnt', flush=True)\n"
    "sys.stdin.readline()\n"
)

# Starts a burning child and reports when it has burnt; on "exit" lets it exit without reaping
# it (a zombie); on "reap" reaps it; on "quit" leaves.
_PARENT = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {_BURN!r}], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), child.pid, flush=True)
for line in sys.stdin:
    if line.strip() == "exit":
        child.stdin.write("\\n"); child.stdin.flush()
        print("exiting", flush=True)
    elif line.strip() == "reap":
        child.wait()
        print("reaped", flush=True)
    else:
        break
"""


def _say(parent: subprocess.Popen[str], line: str) -> str:
    assert parent.stdin is not None
    assert parent.stdout is not None
    parent.stdin.write(line + "\n")
    parent.stdin.flush()
    return parent.stdout.readline().strip()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_tree_counts_a_child_alive_exited_and_reaped_each_once() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        burnt, child = parent.stdout.readline().split()
        assert burnt == "burnt"
        own = cpu_seconds(parent.pid)

        alive = tree_cpu_seconds(parent.pid)
        assert alive - own >= 0.35, (own, alive)

        assert _say(parent, "exit") == "exiting"
        deadline = time.monotonic() + 5
        while _state(int(child)) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        zombie = tree_cpu_seconds(parent.pid)

        assert _say(parent, "reap") == "reaped"
        assert not os.path.exists(f"/proc/{child}")
        reaped = tree_cpu_seconds(parent.pid)

        # The child's time moves from its own entry to its parent's reaped time: counted once
        # all along (a few clock ticks of slack for the parent's own work meanwhile).
        assert abs(zombie - alive) < 0.1, (alive, zombie)
        assert abs(reaped - zombie) < 0.1, (zombie, reaped)
        assert reaped - cpu_seconds(parent.pid) >= 0.35
    finally:
        parent.communicate("quit\n", timeout=10)


def test_a_postgres_backend_that_exited_stays_in_the_servers_share(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    pid = embedded_postgres.postmaster_pid()
    before = tree_cpu_seconds(pid)
    with psycopg.connect(embedded_postgres.uri(), autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{backend[0]}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{backend[0]}"), "the backend was not reaped"
    spent = tree_cpu_seconds(pid) - before
    assert spent >= 0.05, spent


pytestmark = pytest.mark.integration
