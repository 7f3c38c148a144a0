"""Server CPU from ``/proc``: utime + stime of a process and all its descendants.

Every thread's time is in its process's ``/proc/<pid>/stat``, so the sender thread and
the HTTP delivery are counted with the request path. Resolution is one clock tick
(10 ms at the usual 100 Hz): runs of a few seconds at one busy core make it ~0.3 %.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (gunicorn's master and workers, say)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:  # the task ended meanwhile
                continue
    return pids


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks, 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def tree_cpu(root: int) -> dict[int, int]:
    return {pid: cpu_ticks(pid) for pid in process_tree(root)}


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU the tree used between two snapshots; a process born meanwhile counts from 0."""
    ticks = sum(max(0, t - before.get(pid, 0)) for pid, t in after.items())
    return ticks / TICKS_PER_SECOND


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def core_busy_seconds(core: int | None) -> float:
    """Busy time (everything but idle and iowait, steal included) of one core, or of all."""
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
            return (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND
    return 0.0
