"""The benchmark's bare webhook client against its sink: every POST it counts as answered is
one webhook the sink recorded, each under its own webhook-id."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def test_every_post_counted_is_one_webhook_the_sink_recorded(tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sink", "--out", str(log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        url = re.search(r"sink listening on (\S+)", sink.stdout.readline())
        assert url is not None
        result = tmp_path / "result.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bare_http",
                "--url",
                url.group(1) + "/hook",
                "--count",
                "300",
                "--concurrency",
                "16",
                "--result",
                str(result),
            ],
            check=True,
            timeout=60,
        )
        answered = json.loads(result.read_text())
        assert answered["ok"] == 300
        assert answered["cpu_s"] > 0
        assert answered["t1"] > answered["t0"]
    finally:
        sink.terminate()  # it writes what it still holds before it exits
        try:
            sink.wait(10)
        except subprocess.TimeoutExpired:
            sink.kill()
            raise
    ids = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(ids) == 300
    assert len(set(ids)) == 300


pytestmark = pytest.mark.integration
