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


def test_exported_names_are_sorted_and_importable() -> None:
    names = layersync_middleware.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(layersync_middleware, name) is not None


@pytest.mark.slow
def test_wheel_builds_with_py_typed_and_without_tests(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "layersync_middleware/py.typed" in names
    assert "layersync_middleware/hub/page.html" in names
    assert not any(n.startswith(("tests/", "example_apps/")) for n in names)
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: httpx" in text
    assert "Requires-Dist: starlette" in text and "extra == 'hub'" in text  # frameworks only as extras
