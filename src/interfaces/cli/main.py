"""`notifyd`: dev (everything embedded), serve, worker, migrate, keys, secrets, templates."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from application.use_cases.templates import TemplateDraft
from domain.errors import ValidationFailed
from infrastructure.config import ConfigError, Settings
from infrastructure.telemetry.metrics import MetricsServer
from infrastructure.telemetry.tracing import configure_tracing, shutdown_tracing
from interfaces.container import Container, close_clients

log = logging.getLogger("notifyd")

# The commands that serve, and so may trace (OTEL_* variables, see telemetry/tracing.py).
SERVING_COMMANDS = ("dev", "serve", "worker", "run")

# The cyclic collector's thresholds while serving (CPython's defaults are 700, 10, 10). A
# worker keeps batches of up to 128 notifications alive across awaits, so the default
# young-generation threshold was crossed thousands of times a minute and promoted batches
# into full collections over the whole heap: 12% of a worker's CPU. Requests and deliveries
# free what they allocate, so young collections stay rare; full ones still follow after
# 50,000 x 20 x 10 net allocations (and CPython's own 25%-growth rule).
SERVING_GC_THRESHOLDS = (50_000, 20, 10)


def _configure_logging(level: str, log_format: str) -> None:
    from infrastructure.telemetry.logs import configure_logging

    try:
        configure_logging(level, log_format.strip().lower())
    except ValueError as error:
        raise ConfigError(f"NOTIFYD_LOG_FORMAT / NOTIFYD_LOG_LEVEL: {error}") from error


def _say(text: str) -> None:
    print(text, flush=True)


@contextlib.asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Container]:
    container = Container(settings=settings)
    try:
        yield container
    finally:
        await close_clients(container)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # `kill -USR1 <pid>` logs where every task waits: the way to see what a stuck delivery is
    # waiting for without stopping the process.
    loop.add_signal_handler(signal.SIGUSR1, _log_task_stacks)
    return stop


def _log_task_stacks() -> None:
    tasks = asyncio.all_tasks()
    for task in tasks:
        where = []
        # Follow the chain of awaited coroutines down to the innermost one.
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                where.append(
                    f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:"
                    f"{frame.f_lineno})"
                )
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        log.warning("task %s waits in %s", task.get_name(), " -> ".join(where) or "?")
    log.warning("%d tasks", len(tasks))


def _start_metrics(container: Container) -> MetricsServer | None:
    settings: Settings = container.settings()
    address = settings.metrics_address()
    if address is None:
        return None
    try:
        server = MetricsServer(container.metrics().registry, *address)
    except OSError as error:
        raise ConfigError(
            f"NOTIFYD_METRICS_LISTEN={settings.metrics_listen}: {error}; each notifyd process "
            "on a host needs a port of its own (0 picks a free one), or off"
        ) from error
    _say(f"metrics on {server.url}")
    return server


async def _serve(container: Container, stop: asyncio.Event, *, api: bool, worker: bool) -> None:
    settings: Settings = container.settings()
    tasks: list[asyncio.Task[None]] = []
    server = None
    metrics = _start_metrics(container)
    try:
        if metrics is not None and worker:
            # The queue and breaker gauges are global numbers read from Redis: only the
            # processes that run a worker export them, or sum() over every API process would
            # count the same queue many times.
            tasks.append(asyncio.create_task(container.gauges().run(stop)))
        if api:
            server = container.api_server()
            await server.start()
            _say(f"notifyd API listening on {server.address}")
        if worker:
            tasks.append(
                asyncio.create_task(container.worker().run(stop, settings.shutdown_grace_seconds))
            )
            _say("notifyd worker started")
        # What exists by now (modules, the container, compiled statements) lives as long as
        # the process: out of the collector's sight, full collections skip it while serving
        # and the interpreter's teardown after the drain takes milliseconds, not half a second.
        gc.freeze()
        gc.set_threshold(*SERVING_GC_THRESHOLDS)
        await stop.wait()
        log.info("shutting down")
        if server is not None:
            await server.stop(settings.shutdown_grace_seconds)
        await asyncio.gather(*tasks)
    finally:
        if metrics is not None:
            # Last: a scrape during the drain still sees the final counts.
            await asyncio.to_thread(metrics.stop)


@contextlib.asynccontextmanager
async def _with_sandbox(settings: Settings, default_dir: Path) -> AsyncIterator[Settings]:
    """With NOTIFYD_SANDBOX on, start a sandbox peer for every channel in this process and
    return the settings that point the providers at them."""
    if not settings.sandbox:
        yield settings
        return
    from dataclasses import replace

    from infrastructure.sandbox.stack import sandbox_stack

    directory = Path(settings.sandbox_dir) if settings.sandbox_dir else default_dir
    async with sandbox_stack(directory.resolve()) as sandbox:
        for peer, where in sandbox.peers.items():
            _say(f"sandbox {peer:<8} {where}")
        _say(f"sandbox webhook sink: send WEBHOOK notifications to {sandbox.webhook_url}/<path>")
        _say(f"sandbox journal: {sandbox.journal_dir} (`notifyd sandbox` shows what arrived)")
        yield replace(settings, **sandbox.overrides)


async def cmd_serve(settings: Settings, api: bool, worker: bool) -> None:
    settings.require_servers()
    stop = _stop_event()
    async with (
        _with_sandbox(settings, Path("var/sandbox")) as settings,
        _running(settings) as container,
    ):
        await _serve(container, stop, api=api, worker=worker)


async def cmd_migrate(settings: Settings) -> None:
    from infrastructure.persistence.engine import sqlalchemy_url
    from infrastructure.persistence.migrations_runner import upgrade_to_head

    if not settings.database_url:
        raise ConfigError("set NOTIFYD_DATABASE_URL")
    await asyncio.to_thread(upgrade_to_head, sqlalchemy_url(settings.database_url))
    _say("database is at the latest migration")


async def cmd_keys_create(settings: Settings, tenant: str, service: str) -> None:
    settings.require_servers()
    async with _running(settings) as container:
        issued = await container.create_api_key().execute(tenant, service)
    _say(f"api key:        {issued.key}")
    _say(f"tenant:         {issued.tenant_id}")
    _say(f"service:        {issued.service}")
    _say(f"webhook secret: {issued.webhook_secret}")
    _say("The key is shown once; notifyd stores only its hash.")


async def cmd_secrets_rotate(settings: Settings, tenant: str, overlap_hours: float | None) -> None:
    from datetime import timedelta

    from application.use_cases.administration import RotateWebhookSecret

    settings.require_servers()
    hours = settings.webhook_secret_overlap_hours if overlap_hours is None else overlap_hours
    async with _running(settings) as container:
        rotate = RotateWebhookSecret(container.uow(), container.clock(), timedelta(hours=hours))
        rotated = await rotate.execute(tenant)
    until = rotated.previous_secret_expires_at
    _say(f"tenant:                 {rotated.tenant_id}")
    _say(f"webhook secret:         {rotated.webhook_secret}")
    _say(f"previous secret until:  {until.isoformat() if until else '-'}")
    _say(
        "Webhooks carry a signature by each secret until then; running workers pick the new "
        "secret up within a minute."
    )


def _template_draft(name: str, path: str) -> TemplateDraft:
    """A CreateTemplateRequest in its JSON form (as grpcurl takes it), read from ``path``
    ('-' for stdin). NAME on the command line wins over a name in the file."""
    from google.protobuf import json_format

    from interfaces.grpc.gen.notify.v1 import template_service_pb2 as tpb
    from interfaces.grpc.template_mappers import draft

    request = tpb.CreateTemplateRequest()
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        json_format.Parse(text, request)
    except OSError as error:
        raise ValidationFailed.single("file", f"cannot read {path}: {error}") from error
    except json_format.ParseError as error:
        raise ValidationFailed.single(
            "file", f"{path} is not a CreateTemplateRequest: {error}"
        ) from error
    request.name = name or request.name
    return draft(request)


async def cmd_templates_put(settings: Settings, args: argparse.Namespace) -> None:
    settings.require_servers()
    template = _template_draft(args.name, args.file)
    async with _running(settings) as container:
        stored = await container.put_template().execute(args.tenant, "cli", template)
    _say(
        f"template {stored.template.name} version {stored.version.version} stored and active "
        f"(default locale {stored.template.default_locale})"
    )


DEV_TENANT = "dev"
DEV_SERVICE = "dev"


async def cmd_dev(settings: Settings, data_dir: Path) -> None:
    from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
    from infrastructure.persistence.migrations_runner import upgrade_to_head

    # Runs before the server starts, so blocking file calls here stall nothing.
    data_dir = data_dir.resolve()  # noqa: ASYNC240
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = _stop_event()
    postgres = await asyncio.to_thread(EmbeddedPostgres(data_dir / "postgres").start)
    redis_server = await asyncio.to_thread(EmbeddedRedis(data_dir / "redis", persistent=True).start)
    try:
        await asyncio.to_thread(upgrade_to_head, postgres.sqlalchemy_url())
        dev = Settings.from_env(
            database_url=postgres.sqlalchemy_url(),
            redis_url=redis_server.url,
            listen=os.environ.get("NOTIFYD_LISTEN", "127.0.0.1:50051"),
            allow_private_targets=True,
            sandbox=os.environ.get("NOTIFYD_SANDBOX", "true").lower() not in ("0", "false", "no"),
        )
        async with (
            _with_sandbox(dev, data_dir / "sandbox") as dev,
            _running(dev) as container,
        ):
            key = os.environ.get("NOTIFYD_DEV_API_KEY") or _dev_key(data_dir)
            issued = await container.create_api_key().execute(DEV_TENANT, DEV_SERVICE, key)
            await _seed_templates(container)
            _say(f"postgres: {postgres.uri()}")
            _say(f"redis:    {redis_server.url}")
            _say(f"dev API key:        {issued.key}")
            _say(f"dev webhook secret: {issued.webhook_secret}")
            await _serve(container, stop, api=True, worker=True)
    finally:
        redis_server.stop()
        postgres.stop()


def cmd_sandbox(settings: Settings, data_dir: Path, peer: str, limit: int) -> None:
    """Print what the sandbox peers received, newest last, as one JSON object per line."""
    import json

    from infrastructure.sandbox.journal import read_journals

    directory = Path(settings.sandbox_dir) if settings.sandbox_dir else data_dir / "sandbox"
    journals = read_journals(directory) if directory.is_dir() else {}
    entries = [
        entry for name, found in journals.items() if not peer or name == peer for entry in found
    ]
    entries.sort(key=lambda e: str(e.get("at", "")))
    if not entries:
        _say(f"nothing received yet in {directory}")
    for entry in entries[-limit:]:
        _say(json.dumps(entry, sort_keys=True, default=str))


def _dev_key(data_dir: Path) -> str:
    import secrets

    path = data_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    key = "nfy_dev_" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _welcome_template() -> TemplateDraft:
    from domain.template import (
        EmailContent,
        InAppContent,
        LocalizedContent,
        TemplateVersionContent,
        VariableDeclaration,
        VariableType,
    )

    def localized(locale: str, title: str, body: str) -> LocalizedContent:
        return LocalizedContent(
            locale,
            email=EmailContent(title, f"<p>{body}</p>", body),
            in_app=InAppContent(title, body),
        )

    return TemplateDraft(
        name="welcome",
        description="Greets a new user (seeded by dev mode)",
        default_locale="en",
        content=TemplateVersionContent(
            variables=(VariableDeclaration("name", VariableType.STRING, required=True),),
            contents=(
                localized("en", "Welcome, {{ name }}!", "Hello {{ name }}, glad you are here."),
                localized(
                    "de", "Willkommen, {{ name }}!", "Hallo {{ name }}, schön, dass du da bist."
                ),
            ),
        ),
    )


async def _seed_templates(container: Container) -> None:
    async with container.uow()() as uow:
        if await uow.templates.get(DEV_TENANT, "welcome") is not None:
            return
    await container.put_template().execute(DEV_TENANT, DEV_SERVICE, _welcome_template())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifyd", description="Multi-channel notification service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run everything with embedded Postgres and Redis")
    dev.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("NOTIFYD_DATA_DIR", "var"))
    )
    for name, text in (
        ("serve", "run the gRPC API"),
        ("worker", "run a delivery worker"),
        ("run", "run the API and a worker in one process"),
    ):
        p = sub.add_parser(name, help=text)
        if name != "worker":
            p.add_argument("--listen", help="host:port (default NOTIFYD_LISTEN or 0.0.0.0:50051)")
    sub.add_parser("migrate", help="apply database migrations")
    sandbox = sub.add_parser(
        "sandbox",
        help="show what the dev sandbox peers (SMTP, SMS, push, webhook) received",
        description="Reads the journals the sandbox peers of `notifyd dev` (or NOTIFYD_SANDBOX) "
        "write: one JSON object per message, oldest first.",
    )
    sandbox.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("NOTIFYD_DATA_DIR", "var"))
    )
    sandbox.add_argument(
        "--peer",
        default="",
        choices=["", "smtp", "twilio", "vonage", "fcm", "apns", "webhook"],
        help="only this peer",
    )
    sandbox.add_argument("--limit", type=int, default=50, help="at most this many (newest)")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="issue an API key for a tenant's calling service")
    create.add_argument("--tenant", required=True)
    create.add_argument("--service", required=True)
    secrets = sub.add_parser("secrets", help="webhook signing secrets").add_subparsers(
        dest="secrets_command", required=True
    )
    rotate = secrets.add_parser(
        "rotate",
        help="give a tenant a new webhook signing secret",
        description="The new secret signs every webhook from now on; the old one signs too "
        "(a second webhook-signature entry) until the overlap ends, so receivers can switch.",
    )
    rotate.add_argument("--tenant", required=True)
    rotate.add_argument(
        "--overlap-hours",
        type=float,
        default=None,
        help="how long the old secret keeps signing (default NOTIFYD_WEBHOOK_SECRET_OVERLAP_HOURS"
        " or 24; 0 stops it at once, e.g. after a leak)",
    )
    templates = sub.add_parser("templates", help="templates").add_subparsers(
        dest="templates_command", required=True
    )
    put = templates.add_parser(
        "put",
        help="create a template or store its next version, and activate it",
        description="FILE holds a notify.v1.CreateTemplateRequest as JSON (the form grpcurl "
        "takes): default_locale, variables and contents per locale and channel.",
    )
    put.add_argument("name", nargs="?", default="", help="the template's name (or in FILE)")
    put.add_argument("--tenant", required=True)
    put.add_argument("--file", required=True, help="the request as JSON; '-' reads stdin")
    return parser


def _dispatch(
    args: argparse.Namespace, settings: Settings
) -> Callable[[], Coroutine[Any, Any, None]]:
    if args.command == "dev":
        return lambda: cmd_dev(settings, args.data_dir)
    if args.command in ("serve", "worker", "run"):
        if getattr(args, "listen", None):
            settings = Settings.from_env(listen=args.listen)
        api = args.command in ("serve", "run")
        worker = args.command in ("worker", "run")
        return lambda: cmd_serve(settings, api, worker)
    if args.command == "migrate":
        return lambda: cmd_migrate(settings)
    if args.command == "sandbox":

        async def show() -> None:
            cmd_sandbox(settings, args.data_dir, args.peer, args.limit)

        return show
    if args.command == "keys":
        return lambda: cmd_keys_create(settings, args.tenant, args.service)
    if args.command == "secrets":
        return lambda: cmd_secrets_rotate(settings, args.tenant, args.overlap_hours)
    return lambda: cmd_templates_put(settings, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        _configure_logging(settings.log_level, settings.log_format)
        if args.command in SERVING_COMMANDS:
            configure_tracing()
        run = _dispatch(args, settings)
        import uvloop

        uvloop.run(run())
    except ConfigError as error:
        print(f"notifyd: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        from domain.errors import DomainError

        if isinstance(error, DomainError):
            print(f"notifyd: {error}", file=sys.stderr)
            return 1
        raise
    finally:
        # Spans still buffered are exported before the process goes.
        shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
