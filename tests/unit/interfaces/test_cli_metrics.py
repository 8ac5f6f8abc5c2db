"""How the CLI starts the metrics endpoint: the line tests and operators read, off, and a port
already taken (a configuration error naming the setting, not a traceback), and which
processes refresh the global queue and breaker gauges."""

from __future__ import annotations

import asyncio
import socket

import pytest
from dependency_injector import providers

from infrastructure.config import ConfigError, Settings
from interfaces.cli.main import _serve, _start_metrics
from interfaces.container import Container


def test_the_endpoint_is_announced_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    server = _start_metrics(Container(settings=Settings(metrics_listen="127.0.0.1:0")))
    assert server is not None
    try:
        assert capsys.readouterr().out == f"metrics on http://127.0.0.1:{server.port}/metrics\n"
    finally:
        server.stop()


def test_off_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert _start_metrics(Container(settings=Settings(metrics_listen="off"))) is None
    assert capsys.readouterr().out == ""


def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        container = Container(settings=Settings(metrics_listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match=rf"NOTIFYD_METRICS_LISTEN=127.0.0.1:{port}.*own"):
            _start_metrics(container)


class _Gauges:
    def __init__(self) -> None:
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1


class _Api:
    address = "127.0.0.1:0"

    async def start(self) -> None:
        pass

    async def stop(self, grace: float) -> None:
        pass


class _Worker:
    async def run(self, stop: asyncio.Event, grace: float) -> None:
        pass


@pytest.mark.parametrize(
    ("api", "worker", "refreshed"), [(True, False, False), (False, True, True), (True, True, True)]
)
async def test_only_a_process_with_a_worker_refreshes_the_global_gauges(
    api: bool, worker: bool, refreshed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    container = Container(settings=Settings(metrics_listen="127.0.0.1:0"))
    gauges = _Gauges()
    container.gauges.override(providers.Object(gauges))
    container.api_server.override(providers.Object(_Api()))
    container.worker.override(providers.Object(_Worker()))
    stop = asyncio.Event()
    stop.set()
    await _serve(container, stop, api=api, worker=worker)
    assert gauges.runs == (1 if refreshed else 0)
