#!/usr/bin/env python3
"""The project's two entry points, needing nothing but Python 3.10+:

    python3 dev.py demo    # run the demo: local hub + example app + a shopping session
    python3 dev.py test    # lint, type-check and run every test (pytest arguments may follow)
    python3 dev.py lint    # ruff, ruff format and mypy only

Both create ./.venv on first use and install the project into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"


def run(*cmd: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may run on an older python3
        sys.exit("layersync-middleware needs Python 3.10 or newer")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = f"{extras}:{(ROOT / 'pyproject.toml').stat().st_mtime_ns}"
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f".[{extras}]")
    STAMP.write_text(wanted)


def demo(args: list[str]) -> None:
    ensure_venv("hub")
    run(BIN / "layersync", "demo", *args)


def lint(args: list[str]) -> None:
    ensure_venv("dev")
    run(PY, "-m", "ruff", "check", ".")
    run(PY, "-m", "ruff", "format", "--check", ".")
    run(PY, "-m", "mypy")


def test(args: list[str]) -> None:
    lint([])
    if shutil.which("npm") is not None:
        # The real browser SDK for the end-to-end tests, pinned by tests/e2e/package-lock.json.
        run("npm", "ci", "--prefix", str(ROOT / "tests" / "e2e"), "--no-audit", "--no-fund", "--silent")
    if args:  # a chosen subset: no coverage gate
        run(PY, "-m", "pytest", *args)
        return
    # Branch coverage of the package, measured in-process and gated (see [tool.coverage]).
    run(PY, "-m", "coverage", "run", "-m", "pytest")
    run(PY, "-m", "coverage", "report")
    # Python 3.10 at the declared minimum versions, 3.12 and 3.13 at the newest.
    run(sys.executable, ROOT / "scripts" / "matrix.py")


def main() -> None:
    commands = {"demo": demo, "test": test, "lint": lint}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
