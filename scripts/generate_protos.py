"""Regenerate Python code from proto/ into src/interfaces/grpc/gen (the one command: make gen).

grpcio-tools writes imports absolute from the proto root (``from notify.v1 import x_pb2``);
they are rewritten to the package the code lives in so it imports without sys.path tricks.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "interfaces" / "grpc" / "gen"
PACKAGE = "interfaces.grpc.gen"


def main() -> int:
    # The mypy plugins live beside the interpreter (the venv's bin), which may not be on PATH.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={OUT_DIR}",
            f"--mypy_out={OUT_DIR}",
            f"--grpc_python_out={OUT_DIR}",
            f"--mypy_grpc_out={OUT_DIR}",
            f"--descriptor_set_out={OUT_DIR / 'notify.binpb'}",
            "--include_imports",
            *protos,
        ]
    )
    if code != 0:
        return int(code)
    pattern = re.compile(r"^from notify(\.\S+)? import", re.MULTILINE)
    for path in OUT_DIR.rglob("*.py*"):
        if path.suffix in (".py", ".pyi"):
            text = pattern.sub(
                lambda m: f"from {PACKAGE}.notify{m.group(1) or ''} import", path.read_text()
            )
            path.write_text(text)
    for folder in [OUT_DIR, *[p for p in OUT_DIR.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").write_text(
            '"""Generated from proto/ by scripts/generate_protos.py; do not edit."""\n'
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
