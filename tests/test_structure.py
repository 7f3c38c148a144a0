"""The package's shape: layers that only import downwards, no import cycle, and a paired
request that crosses few functions and modules on its way (issue 18)."""

from __future__ import annotations

import ast
import asyncio
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from helpers import settings

PACKAGE = Path(__file__).resolve().parent.parent / "layersync_middleware"

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "_log", "_countries", "_ip", "_wire", "_pii"),  # facts and small tools
    ("_match", "_settings", "_request", "_event"),  # the core's vocabulary
    ("_build", "_pairing"),  # from a request or the app's arguments to an event
    ("_delivery",),  # the rules, the drivers, the transports, the spool, the exit
    ("_client",),  # the user's API
    ("_clients", "testing"),  # the process's shared clients, the test helpers
    ("asgi", "wsgi", "flask", "django", "celery", "metrics"),  # adapters, and what apps serve
    ("hub", "cli", "__init__", "__main__"),  # the tools and the package's face
]


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


NAMES = {name for name, _ in modules()}


def imports(name: str, path: Path) -> set[str]:
    """Every module of the package ``name`` imports, lazily or not, type-only included."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("layersync_middleware"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = ".".join([*target, alias.name])
                found.add(sub if sub in NAMES else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("layersync_middleware."):
                    found.add(alias.name.split(".", 1)[1])
    found.discard(name)
    return {f for f in found if f in NAMES}


def layer(name: str) -> int:
    top = name.split(".")[0]
    for level, members in enumerate(LAYERS):
        if top in members:
            return level
    raise AssertionError(f"{name} is in no layer of tests/test_structure.py: put it in one")


def test_every_import_goes_down_or_sideways() -> None:
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in modules()
        for target in imports(name, path)
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    graph = {name: imports(name, path) for name, path in modules()}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycles.append([*trail[trail.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, [*trail, node])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_a_paired_request_crosses_few_functions_and_modules() -> None:
    """One paired ASGI request, the sender warm: at most 20 of the package's functions on
    the request side, at most 10 switches between its modules (the review's walk)."""
    from layersync_middleware import LayerSync, LayerSyncMiddleware
    from layersync_middleware.testing import MemoryTransport

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    client = LayerSync(settings(), transport=MemoryTransport())
    middleware = LayerSyncMiddleware(app, client=client)

    def scope(n: int) -> dict[str, Any]:
        headers = [
            (b"host", b"shop.example"),
            (b"user-agent", b"Mozilla/5.0"),
            (b"cookie", b"_fbp=fb.1.1700000000000.42"),
            (b"x-layersync-event-id", f"atc_{n:016x}".encode()),
            (b"x-layersync-event-name", b"add_to_cart"),
        ]
        return {"type": "http", "method": "POST", "path": "/api/cart/add", "headers": headers, "client": ("1.2.3.4", 1)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def requests(first: int, n: int) -> None:
        for i in range(first, first + n):
            await middleware(scope(i), receive, send)

    asyncio.run(requests(0, 5))  # warm: the sender started, the verdict cached
    calls: list[tuple[str, str]] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and str(PACKAGE) in frame.f_code.co_filename:
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))

    loop = asyncio.new_event_loop()
    try:
        sys.setprofile(profile)
        loop.run_until_complete(requests(100, 1))
    finally:
        sys.setprofile(None)
        loop.close()
    switches = sum(1 for (a, _), (b, _) in itertools.pairwise(calls) if a != b)
    walk = [f"{Path(f).name}:{fn}" for f, fn in calls]
    assert 0 < len(calls) <= 20 and switches <= 10, walk
    assert client.flush(5) == 0 and client.stats().sent == 6
    client.shutdown(1)
