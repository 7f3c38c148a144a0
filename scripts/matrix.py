#!/usr/bin/env python3
"""The compatibility matrix: the framework-facing tests at the oldest versions the project
declares and at the newest, on the Pythons the README claims. Needs nothing but Python.

    python3 scripts/matrix.py                  # every job
    python3 scripts/matrix.py min              # some jobs, by name
    python3 scripts/matrix.py min -- -k flask  # extra pytest arguments after --
    python3 scripts/matrix.py --list

Jobs: "min" is Python 3.10 with constraints/minimum.txt (every declared floor, pinned);
"py3.12" and "py3.13" take the newest releases. Python 3.11 is the main suite's (./.venv).

Each job has its own venv under .venv-matrix/<job>, built once and rebuilt when
pyproject.toml, the job's constraints or the interpreter change, and daily for the newest
jobs so that "newest" stays true. Interpreters come from pyenv's versions directory or
python3.X on PATH: a missing one fails the run in CI (CI=true) and is reported and passed
over elsewhere, so that a contributor without every Python can still run the rest.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".venv-matrix"

# What the tests below import: the adapters' extras and the test tools. Not the heavy extras
# (browsers, uWSGI, benchmarks): those tests run in the main suite only.
EXTRAS = "hub,django,flask,phone,fast"
TEST_TOOLS = ("pytest", "pydantic", "fastapi", "hypothesis")  # the tests share strategies.py with the fuzz
# The fast tests that meet a framework's or a dependency's API.
TESTS = (
    *(
        f"tests/test_{name}.py"
        for name in "asgi wsgi client flask django settings match request event pii ip log wire".split()
    ),
    *(f"tests/delivery/test_{name}.py" for name in "transport queue core".split()),
)
PYTEST_ARGS = ("-m", "not e2e and not slow and not extras", "-q", "-p", "no:cacheprovider")
# The summary names the versions each job actually tested.
SHOWN = ("httpx", "starlette", "uvicorn", "django", "asgiref", "flask", "werkzeug")


@dataclass(frozen=True)
class Job:
    name: str
    python: str  # "3.10"
    constraints: Path | None = None  # None: the newest releases


JOBS = (
    Job("min", "3.10", ROOT / "constraints" / "minimum.txt"),
    Job("py3.12", "3.12"),
    Job("py3.13", "3.13"),
)


@dataclass
class Result:
    job: Job
    status: str  # "ok", "FAIL", or "missing" (no interpreter, outside CI)
    detail: str
    seconds: float = 0.0


class JobFailed(Exception):
    pass


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def find_python(version: str) -> tuple[Path, str] | None:
    """An interpreter for ``version`` ("3.10") and its full version: pyenv's newest, else PATH's."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = [p for p in versions.glob(f"{version}.*") if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)]
    installed.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    candidates = [p / "bin" / f"python{version}" for p in installed]
    if on_path := shutil.which(f"python{version}"):
        candidates.append(Path(on_path))
    for path in candidates:
        # pyenv's shims put every python3.X on PATH and fail for those not installed: ask each one.
        try:
            probe = subprocess.run(
                [str(path), "-c", "import sys; print(sys.version.split()[0], sys.executable)"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        full, _, executable = probe.stdout.strip().partition(" ")
        if probe.returncode == 0 and full.startswith(f"{version}."):
            return Path(executable), full
    return None


def venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fingerprint(job: Job, python: Path, full_version: str) -> str:
    digest = hashlib.sha256()
    for part in (str(python), full_version, EXTRAS, *TEST_TOOLS):
        digest.update(part.encode() + b"\0")
    for path in (ROOT / "pyproject.toml", job.constraints):
        if path is not None:
            digest.update(path.read_bytes() + b"\0")
    if job.constraints is None:
        digest.update(datetime.date.today().isoformat().encode())
    return digest.hexdigest()


def run_quietly(*cmd: str | Path) -> None:
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout + proc.stderr, flush=True)
        raise JobFailed(f"{Path(str(cmd[0])).name} {' '.join(str(c) for c in cmd[1:4])} ... exited {proc.returncode}")


def prepare(job: Job, python: Path, full_version: str) -> Path:
    """The job's venv with the project installed, rebuilt from scratch when its inputs changed."""
    env = HOME / job.name
    stamp = env / ".matrix-stamp"
    wanted = fingerprint(job, python, full_version)
    if venv_python(env).is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return venv_python(env)
    HOME.mkdir(exist_ok=True)
    (HOME / ".gitignore").write_text("*\n")  # keeps the venvs out of git, ruff and the sdist
    print(f"matrix {job.name}: building {env.relative_to(ROOT)} with Python {full_version}", flush=True)
    # From scratch: packages left from an earlier resolution would otherwise be tested too.
    run_quietly(python, "-m", "venv", "--clear", env)
    install = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f".[{EXTRAS}]", *TEST_TOOLS]
    if job.constraints is not None:
        install += ["-c", str(job.constraints)]
    run_quietly(venv_python(env), *install)
    stamp.write_text(wanted)  # last, so that an interrupted install is redone
    return venv_python(env)


def tested_versions(python: Path) -> str:
    code = f"from importlib.metadata import version; print(' '.join(n + ' ' + version(n) for n in {SHOWN!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run_tests(python: Path, pytest_args: list[str]) -> str:
    """Runs the tests with their output shown; returns pytest's last line ("731 passed in 25.10s")."""
    last = ""
    with subprocess.Popen(
        [str(python), "-m", "pytest", *PYTEST_ARGS, *TESTS, *pytest_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            last = line.strip(" =\n") or last
    if proc.returncode:
        raise JobFailed(last or f"pytest exited {proc.returncode}")
    return last


def run_job(job: Job, pytest_args: list[str]) -> Result:
    started = time.monotonic()
    found = find_python(job.python)
    if found is None:
        where = f"pyenv's versions/{job.python}.* or python{job.python} on PATH"
        return Result(job, "FAIL" if in_ci() else "missing", f"no Python {job.python} ({where}); CI=true requires it")
    python, full_version = found
    try:
        env_python = prepare(job, python, full_version)
        print(f"matrix {job.name}: Python {full_version}, {tested_versions(env_python)}", flush=True)
        status, outcome = "ok", run_tests(env_python, pytest_args)
    except JobFailed as exc:
        status, outcome = "FAIL", str(exc)
    return Result(job, status, f"Python {full_version}: {outcome}", time.monotonic() - started)


def main() -> int:
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="*", metavar="job", help="jobs to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    by_name = {job.name: job for job in JOBS}
    if args.list:
        for job in JOBS:
            print(f"{job.name}: Python {job.python}, {job.constraints.name if job.constraints else 'newest releases'}")
        return 0
    unknown = [name for name in args.jobs if name not in by_name]
    if unknown:
        parser.error(f"unknown job {', '.join(unknown)} (jobs: {', '.join(by_name)})")
    jobs = [by_name[name] for name in args.jobs] or list(JOBS)

    started = time.monotonic()
    results = [run_job(job, pytest_args) for job in jobs]
    print(flush=True)
    for r in results:
        print(f"matrix {r.job.name:<7} {r.status:<7} {r.detail} ({r.seconds:.0f} s)")
    passed = sum(r.status == "ok" for r in results)
    print(f"matrix: {passed}/{len(results)} jobs ok in {time.monotonic() - started:.0f} s")
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
