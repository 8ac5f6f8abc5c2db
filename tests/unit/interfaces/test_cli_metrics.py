"""How the CLI starts the metrics endpoint: the line tests and operators read, off, and a port
already taken (a configuration error naming the setting, not a traceback)."""

from __future__ import annotations

import socket

import pytest

from infrastructure.config import ConfigError, Settings
from interfaces.cli.main import _start_metrics
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
