"""The core imports with no web framework, exports what it says, and the wheel builds."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import layersync_middleware

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_without_any_web_framework() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"starlette", "fastapi", "flask", "werkzeug", "django", "uvicorn", "asgiref"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import layersync_middleware as l
from layersync_middleware import LayerSyncMiddleware, LayerSyncWSGIMiddleware
from layersync_middleware.testing import MemoryTransport
c = l.LayerSync(site_id="s", secret_key="sk_x", sender="sync", transport=MemoryTransport())
assert c.track("purchase", request={"REQUEST_METHOD": "POST", "PATH_INFO": "/x", "REMOTE_ADDR": "1.2.3.4"})
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "ok", result.stderr


def test_the_public_namespace_is_exactly_what_it_exports() -> None:
    # As httpx's test_exported_members: nothing public is left out of __all__, nothing private
    # leaks in, and reprs and docs name the public path.
    public = {name for name in dir(layersync_middleware) if not name.startswith("_")}
    modules = {"asgi", "wsgi", "testing", "flask", "django", "hub", "cli", "celery", "metrics", "annotations"}
    assert public - modules == set(layersync_middleware.__all__) - {"__version__"}
    assert layersync_middleware.__all__ == sorted(layersync_middleware.__all__)
    for name in layersync_middleware.__all__:
        obj = getattr(layersync_middleware, name)
        if isinstance(obj, type):  # the package itself, or a public module of it
            assert not any(part.startswith("_") for part in obj.__module__.split(".")), name
    assert repr(layersync_middleware.Stats()).startswith("Stats(")
    assert str(layersync_middleware.LayerSync) == "<class 'layersync_middleware.LayerSync'>"


def test_the_client_keeps_its_plumbing_private() -> None:
    public = {n for n in dir(layersync_middleware.LayerSync) if not n.startswith("_")}
    assert public == {
        "aflush",
        "ashutdown",
        "asend",
        "flush",
        "from_env",
        "send",
        "shutdown",
        "stats",
        "track",
        "track_from_headers",
        "track_with_identity",
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [built] = out.glob("*.whl")
    return built


@pytest.mark.slow
def test_wheel_builds_with_py_typed_and_without_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "layersync_middleware/py.typed" in names
    assert "layersync_middleware/hub/page.html" in names
    assert not any(n.startswith(("tests/", "example_apps/")) for n in names)
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: httpx" in text
    assert "Requires-Dist: starlette" in text and "extra == 'hub'" in text  # frameworks only as extras


@pytest.mark.slow
def test_wheel_installs_with_only_its_declared_dependencies(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"

    def pip(*args: str) -> None:
        result = subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]

    pip(str(wheel))
    core = "import layersync_middleware, importlib.util as u; print(u.find_spec('starlette') is None)"
    result = subprocess.run([str(py), "-c", core], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr  # the core works with httpx alone
    pip(f"{wheel}[hub]")
    demo = subprocess.run([str(venv / "bin" / "layersync"), "demo"], capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "paired" in demo.stdout


@pytest.mark.slow
def test_the_sdist_holds_what_its_tests_import(tmp_path: Path) -> None:
    import ast
    import tarfile

    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [sdist] = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    top_levels = {name.split("/", 1)[0] for name in names}
    imported: set[str] = set()
    for test in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(test.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
    ours = {name for name in imported if (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()}
    assert ours <= top_levels, ours - top_levels  # example_apps, bench...
    assert {"dev.py", "README.md", "CHANGELOG.md", "docs/wire.md", "tests/e2e/package-lock.json"} <= names
