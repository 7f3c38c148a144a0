"""Superseded by ``bench/run.py`` (see bench/README.md); kept so that old links still run.

    .venv/bin/python bench/bench_middleware.py [--n 10000]

Runs only the in-process request-path measurement of the suite (``micro.py request-path``):
thread CPU per request of a routed Starlette app and a Flask app, bare and wrapped, for an
unmatched path, a matched path without pairing headers and a paired request.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    n = parser.parse_args().n
    micro = Path(__file__).with_name("micro.py")
    done = subprocess.run([sys.executable, str(micro), "request-path", "--n", str(n)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr)
    for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
        print(f"{key:34} {value:10.2f}")


if __name__ == "__main__":
    main()
