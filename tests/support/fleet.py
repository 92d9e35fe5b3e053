"""The fleet: one batch of `rlprune search` processes (uninterrupted, killed with SIGKILL,
stopped with SIGTERM) and their resumes, built once per session and shared by the modules that
inspect it. One is a fresh `python -m rlprune`; the rest are forked from a server (`serve`)
that has done the imports, which cost several CPU-seconds per fresh process."""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.assets import _CACHE, PROCESS_TIMEOUT, WARMUP, Assets, get_assets
from support.forkserver import Child, ForkServer
from support.runners import (
    Done,
    cli_command,
    copy_run,
    episodes_done,
    finish,
    latest_episode,
    search_argv,
    snapshot,
    start,
)


@dataclass
class Fleet:
    """Search processes started at once, cwd `root`, into runs/<name>:

    a: a fresh `python -m rlprune search` (the real entry point); a2, a3: forked (see
    `serve`), uninterrupted, started together; b: SIGKILLed mid-episode after its episode-6
    checkpoint, then resumed; c: sent SIGTERM after warm-up, then resumed; copies/b0: b with
    its checkpoints removed, resumed (a kill before the first checkpoint). All use the same
    settings and seed. With the resumes run `held` (a resume of a copy of b whose lock this
    process holds) and `same11`/`same12` (two searches into one folder, runs/same).
    Observations made between the interruptions and the resumes are kept in `seen`.
    """

    assets: Assets
    root: Path
    done: dict[str, Done] = field(default_factory=dict)
    seen: dict[str, object] = field(default_factory=dict)

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    @property
    def copies(self) -> Path:
        """Copies of b and c as they were when interrupted (outside runs/, not listed)."""
        return self.root / "copies"


def _interrupt(plans: dict[str, tuple], timeout: float = PROCESS_TIMEOUT) -> dict[str, tuple]:
    """For each name: (process, run, ready, sig). Poll every run until `ready(latest, done)`
    holds, then send it `sig`. Returns (latest checkpoint, episodes done) seen at that moment."""
    pending, seen = dict(plans), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (proc, run, ready, sig) in list(pending.items()):
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.poll()}) before it could be interrupted")
            latest, done = latest_episode(run), episodes_done(run)
            if ready(latest, done):
                os.kill(proc.pid, sig)
                seen[name] = (latest, done)
                del pending[name]
        time.sleep(0.005)
    if pending:
        pytest.fail(f"{', '.join(pending)} never reached the point to interrupt")
    return seen


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every xdist worker of the session shares (basetemp's parent under xdist)."""
    shared = tmp_path_factory.getbasetemp()
    return shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared


def _build_and_save(tmp_path_factory: pytest.TempPathFactory, assets: Assets,
                    saved: Path) -> None:
    """Build the fleet and pickle it (or the reason it failed: every user then fails fast)."""
    if saved.exists():
        return
    try:
        fleet: object = _build_fleet(assets, tmp_path_factory.mktemp("fleet"))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        fleet = RuntimeError(f"building the fleet failed: {exc!r}")
    saved.write_bytes(pickle.dumps(fleet))


def build_in_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start building the fleet in a thread of this worker, unless another worker is
    building it: its searches (other processes) run while this worker's first tests do,
    instead of a test waiting for them."""
    shared = _shared(tmp_path_factory)
    assets = get_assets(tmp_path_factory)  # here: it sets torch's thread count
    lock = open(shared / "fleet.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return

    def build() -> None:
        try:
            _build_and_save(tmp_path_factory, assets, shared / "fleet.pickle")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    _CACHE["fleet_thread"] = threading.Thread(target=build, name="fleet", daemon=True)
    _CACHE["fleet_thread"].start()  # type: ignore[attr-defined]


def get_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """The session's fleet: built by the first xdist worker that starts it or asks for it
    (under a file lock in the folder the workers share), read back by the others."""
    if "fleet" not in _CACHE:
        if "fleet_thread" in _CACHE:
            _CACHE["fleet_thread"].join()  # type: ignore[attr-defined]
        shared = _shared(tmp_path_factory)
        saved = shared / "fleet.pickle"
        with open(shared / "fleet.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # while another worker builds it
            try:
                _build_and_save(tmp_path_factory, get_assets(tmp_path_factory), saved)
                _CACHE["fleet"] = pickle.loads(saved.read_bytes())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    fleet = _CACHE["fleet"]
    if isinstance(fleet, BaseException):
        raise fleet
    return fleet  # type: ignore[return-value]


def _build_fleet(assets: Assets, root: Path) -> Fleet:
    from rlprune.service.jobs.run_folder import Job

    fleet = Fleet(assets, root)
    logs = root / "logs"
    logs.mkdir()
    real = start(assets, root, *search_argv(assets, "runs/a"))
    server = ForkServer(assets, logs)
    children: list[Child] = []
    try:
        procs = {name: server.spawn(root, *search_argv(assets, f"runs/{name}"))
                 for name in ("a2", "a3", "b", "c")}
        children += procs.values()
        seen = _interrupt({
            # b: a checkpoint after training began (warm-up is 3 episodes), then mid-episode.
            "b": (procs["b"], fleet.run("b"),
                  lambda latest, done: (latest or 0) >= 6 and done >= 7, signal.SIGKILL),
            # c: while an episode after warm-up is running.
            "c": (procs["c"], fleet.run("c"), lambda latest, done: done >= WARMUP + 1,
                  signal.SIGTERM)})
        fleet.seen["b_killed_at"], fleet.seen["c_terminated_at"] = seen["b"], seen["c"]
        for name, proc in procs.items():
            fleet.done[name] = server.finish(proc)
        fleet.done["a"] = finish(real)

        fleet.copies.mkdir()
        for name in ("b", "c"):
            fleet.seen[f"{name}_status"] = Job.open(fleet.run(name)).status()
            copy_run(fleet.run(name), fleet.copies / name)
        # What `rlprune list` and `status` say about the interrupted runs, before any resume
        # (and that saying it changes nothing).
        before = snapshot(fleet.run("b"))
        fleet.seen["list"] = _quick(assets, root, "list")
        fleet.seen["status_b"] = _quick(assets, root, "status", "runs/b")
        fleet.seen["b_unchanged_by_list"] = snapshot(fleet.run("b")) == before

        # b0: b as if killed before its first checkpoint.
        b0 = copy_run(fleet.copies / "b", fleet.copies / "b0")
        shutil.rmtree(b0 / "checkpoints")
        (b0 / "checkpoints").mkdir()

        # Resume b, c and b0. Meanwhile this process holds the lock of a copy of b, and
        # another process tries to resume that copy; and two searches go into one folder.
        held = Job.open(fleet.copies / "b")
        held.acquire()
        try:
            before = snapshot(fleet.copies / "b")
            procs = {"b_resume": ("resume", "runs/b", "--quiet"),
                     "c_resume": ("resume", "runs/c", "--quiet"),
                     "b0_resume": ("resume", str(b0), "--quiet"),
                     "held": ("resume", str(fleet.copies / "b"), "--quiet")}
            procs.update({f"same{seed}": search_argv(
                assets, "runs/same", "--seed", str(seed), "--episodes", "4", "--warmup", "2",
                "--checkpoint-every", "2") for seed in (11, 12)})
            procs = {name: server.spawn(root, *argv) for name, argv in procs.items()}
            children += procs.values()
            for name, proc in procs.items():
                fleet.done[name] = server.finish(proc)
            fleet.seen["held_unchanged"] = snapshot(fleet.copies / "b") == before
        finally:
            held.release()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        if real.poll() is None:
            real.kill()
            real.wait()
        server.close()
    return fleet


def _quick(assets: Assets, cwd: Path, *argv: str) -> tuple[int, str, str]:
    """A light `rlprune` command (list, status) as a fresh process: (code, stdout, stderr)."""
    done = subprocess.run(cli_command(*argv), cwd=cwd, env=assets.env(), text=True,
                          capture_output=True, timeout=60)
    return done.returncode, done.stdout, done.stderr
