"""`python -m rlprune.agent.ray_reaper PID`: ends what a local Ray instance started for process
PID once PID is gone, however it went (SIGKILL included).

Ray's head processes (GCS, raylet, monitors) are children of the process that called
`ray.init()`, and the raylet starts its agents and workers; when that process is SIGKILLed,
the dashboard and runtime-env agents live on (seen: still there minutes later). This reaper,
in a session of its own, notes PID's descendants every half second with their start times;
when PID has gone it SIGKILLs those still running (a process whose start time changed is
another that took the number, and is left alone), then exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold ')'
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below `root`, with its start time."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[1]
    found, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def reap(parent: int, poll_s: float = POLL_S) -> int:
    """Watch `parent`; once it is gone, kill what it left. The number killed."""
    start = (_stat(parent) or (0, None))[1]
    known: dict[int, int] = {}
    while (_stat(parent) or (0, None))[1] == start and start is not None:
        known.update(descendants(parent))
        known.pop(os.getpid(), None)  # the reaper is one of them
        time.sleep(poll_s)
    killed = 0
    for pid, started in known.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def start_reaper(parent: int | None = None) -> None:
    """A reaper for `parent` (default: this process), in a session of its own so that it
    outlives its parent's process group."""
    import subprocess

    subprocess.Popen([sys.executable, "-m", "rlprune.agent.ray_reaper",
                      str(parent or os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


if __name__ == "__main__":
    reap(int(sys.argv[1]))
