"""scripts/matrix.py: the minimum-versions job pins exactly the floors pyproject.toml declares,
interpreters are found the way CI needs them, and a missing one fails in CI."""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _load_matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location("matrix", ROOT / "scripts" / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["matrix"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


matrix = _load_matrix()


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_minimum_constraints_pin_every_declared_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [*project["dependencies"], *(r for extra in matrix.EXTRAS.split(",") for r in extras[extra])]
    floors = {}
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement!r}: the matrix pins floors written as name>=version"
        floors[match[1].lower()] = _release(match[2])
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line.split("#")[0].strip()):
            pins[match[1].lower()] = _release(match[2])
    # Each floor pinned as written: a floor raised in one file and not the other fails here.
    assert {name: pins.get(name) for name in floors} == floors
    assert len(floors) >= 9  # httpx, starlette, uvicorn, django, asgiref, flask, werkzeug, phonenumbers, orjson


def _executable(path: Path, target: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is None:  # what a pyenv shim does for a version that is not installed
        path.write_text("#!/bin/sh\necho 'pyenv: version not installed' >&2\nexit 127\n")
        path.chmod(0o755)
    else:
        path.symlink_to(target)


def test_finds_the_newest_pyenv_patch_release_and_asks_each_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    versions = tmp_path / "pyenv" / "versions"
    for name in (f"{version}.2", f"{version}.10", f"{version}-dev"):
        _executable(versions / name / "bin" / f"python{version}", sys.executable)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    found = matrix.find_python(version)

    # 10 > 2 as numbers, not as strings; "-dev" builds are not releases.
    assert found == (versions / f"{version}.10" / "bin" / f"python{version}", platform.python_version())


def test_a_shim_on_path_for_an_uninstalled_python_is_not_an_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _executable(tmp_path / "shims" / "python3.99", None)
    _executable(tmp_path / "shims" / "python3.98", sys.executable)  # answers, but as another version
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "shims"))

    assert matrix.find_python("3.99") is None
    assert matrix.find_python("3.98") is None


@pytest.mark.parametrize(("ci", "status"), [("true", "FAIL"), ("", "missing")])
def test_a_missing_interpreter_fails_in_ci_and_is_reported_elsewhere(
    ci: str, status: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(matrix, "JOBS", (matrix.Job("py3.99", "3.99"),))
    monkeypatch.setattr(sys, "argv", ["matrix.py"])

    exit_code = matrix.main()

    summary = capsys.readouterr().out
    assert exit_code == (1 if status == "FAIL" else 0)
    assert f"matrix py3.99  {status}" in summary and "no Python 3.99" in summary
    assert not (ROOT / ".venv-matrix" / "py3.99").exists()


def test_unknown_jobs_are_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["matrix.py", "py2.7"])
    with pytest.raises(SystemExit) as exit_info:
        matrix.main()
    assert exit_info.value.code == 2
    assert "unknown job py2.7 (jobs: min, py3.12, py3.13)" in capsys.readouterr().err
