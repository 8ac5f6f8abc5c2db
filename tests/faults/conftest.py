"""Fixtures of the fault scenarios: one fresh cluster (Postgres, Redis, sink) per test.

Each cluster lives in its own directory from ``tempfile.mkdtemp`` rather than pytest's
``tmp_path``: pytest prunes old basetemp directories whenever another session starts, which
would pull a running Postgres' data directory from under a scenario if two sessions overlap.
The directory is removed after a passing test and kept (its path printed) after a failure, with
the processes' stderr logs and the sink's record in ``logs/``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, running_cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"faults_report_{report.when}", report)
    return report


@pytest.fixture
def cluster_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="notifyd-faults-"))
    yield root
    report = getattr(request.node, "faults_report_call", None)
    if report is not None and report.passed:
        shutil.rmtree(root, ignore_errors=True)
    else:
        shutil.rmtree(root / "pg", ignore_errors=True)
        print(f"\nfault scenario logs kept in {root / 'logs'}")


@pytest.fixture
def cluster(cluster_root: Path) -> Iterator[Cluster]:
    with running_cluster(cluster_root) as started:
        yield started
