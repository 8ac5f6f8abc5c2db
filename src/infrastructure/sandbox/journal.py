"""What a sandbox peer received: in memory for tests, and appended as JSON lines to
``<directory>/<peer>.jsonl`` so that `notifyd sandbox` (another process) can show it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any


class SandboxJournal:
    def __init__(self, peer: str, directory: Path | None = None) -> None:
        self.peer = peer
        self._path = directory / f"{peer}.jsonl" if directory is not None else None
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries.append(entry)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def read_journals(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every peer's entries, by peer name, oldest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        found[path.stem] = [json.loads(line) for line in lines if line.strip()]
    return found
