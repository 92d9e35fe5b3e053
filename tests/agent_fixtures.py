"""Shared helpers for the tests of the search-job layer (tests/test_agent_*.py).

Imported explicitly (``from agent_fixtures import ...``); nothing here is a conftest fixture.

- tiny user models written as importable modules (``--model MODULE:make``);
- one trained dense checkpoint per session (5 epochs on `digits`, under a second);
- the "fleet": one batch of `rlprune search` processes (uninterrupted, killed with SIGKILL,
  stopped with SIGTERM) and their resumes, built once per session and shared by the modules
  that inspect it. One is a fresh `python -m rlprune`; the rest are forked from a server
  (`serve`) that has done the imports, which cost several CPU-seconds per fresh process;
- running the CLI in-process or as a subprocess, and snapshots of a folder's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

MODEL_MODULE = "rlprune_agent_tinynet"
OTHER_MODULE = "rlprune_agent_othernet"  # other layer names and shapes
FC_HEAVY_MODULE = "rlprune_agent_fcheavy"  # FC layers hold most of the weights

MODEL_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    """Three small convs (two with BatchNorm) and one Linear; 1x28x28 in."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.f1 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x)))
        x = torch.relu(self.c3(x))
        return self.f1(self.pool(x).flatten(1))


def make(num_classes=10, in_channels=1, image_size=28):
    return Net(num_classes, in_channels, image_size)
'''

OTHER_SOURCE = '''
import torch
from torch import nn


class Other(nn.Module):
    """Two convs and a head, other names and shapes than the tiny net."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.conv_b = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        return self.head(self.pool(x).flatten(1))


def make(num_classes=10, in_channels=1, image_size=28):
    return Other(num_classes, in_channels, image_size)
'''

FC_HEAVY_SOURCE = '''
import torch
from torch import nn


class FcHeavy(nn.Module):
    """72 conv weights, 8,040 FC weights."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, stride=4, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.f1 = nn.Linear(8 * 7 * 7, 20)
        self.f2 = nn.Linear(20, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.c1(x))).flatten(1)
        return self.f2(torch.relu(self.f1(x)))


def make(num_classes=10, in_channels=1, image_size=28):
    return FcHeavy(num_classes, in_channels, image_size)
'''

# The tiny net's prunable layers and weight counts, counted by hand from MODEL_SOURCE.
TINY_LAYERS = {"c1": 8 * 1 * 9, "c2": 16 * 8 * 9, "c3": 16 * 16 * 9, "f1": 10 * 64}
TINY_PRUNABLE = sum(TINY_LAYERS.values())  # 4,168

TARGET = 0.5
EPISODES, WARMUP, EVERY = 10, 3, 3
# --fc-k 1 prunes about two thirds of f1 and leaves rewards that vary between episodes
# (k=3 prunes all of f1 and every episode would score chance).
SEARCH_FLAGS = ("--dataset", "digits", "--target", str(TARGET), "--fc-k", "1",
                "--episodes", str(EPISODES), "--warmup", str(WARMUP),
                "--checkpoint-every", str(EVERY), "--finetune-epochs", "0", "--quiet")
PROCESS_TIMEOUT = 240.0


# -- session assets ------------------------------------------------------------------------
@dataclass
class Assets:
    """Model modules (importable from `models`) and dense checkpoints, read-only for tests."""

    models: Path
    dense: Path  # the tiny net, trained 5 epochs on digits
    other_dense: Path  # OTHER_MODULE, untrained
    fc_heavy_dense: Path  # FC_HEAVY_MODULE, untrained

    @property
    def model(self) -> str:
        return f"{MODEL_MODULE}:make"

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: the model modules importable, one thread each."""
        path = os.pathsep.join(p for p in (str(self.models), os.environ.get("PYTHONPATH"))
                               if p)
        return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


_CACHE: dict[str, object] = {}


@contextlib.contextmanager
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def get_assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    if "assets" in _CACHE:
        return _CACHE["assets"]  # type: ignore[return-value]
    from rlprune.models.data import load_dataset
    from rlprune.models.pretrain import pretrain
    from rlprune.models.registry import build_model
    from rlprune.models.train import save_weights

    root = tmp_path_factory.mktemp("agent_assets")
    models = root / "models"
    models.mkdir()
    for name, source in ((MODEL_MODULE, MODEL_SOURCE), (OTHER_MODULE, OTHER_SOURCE),
                         (FC_HEAVY_MODULE, FC_HEAVY_SOURCE)):
        (models / f"{name}.py").write_text(source)
    data = load_dataset("digits")
    dense, other, heavy = root / "dense.pt", root / "other.pt", root / "fc_heavy.pt"
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.syspath_prepend(str(models))
        pretrain(f"{MODEL_MODULE}:make", data, dense, epochs=5, seed=0)
        torch.manual_seed(0)
        save_weights(other, build_model(f"{OTHER_MODULE}:make"), {"model": "other"})
        save_weights(heavy, build_model(f"{FC_HEAVY_MODULE}:make"), {"model": "fc-heavy"})
    assets = Assets(models, dense, other, heavy)
    _CACHE["assets"] = assets
    return assets


# -- running the CLI ----------------------------------------------------------------------
def run_main(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`rlprune ARGV` in this process: (exit code, stdout, stderr)."""
    from rlprune.service.cli import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rlprune", *argv]


def start(assets: Assets, cwd: Path, *argv: str) -> subprocess.Popen:
    """`rlprune ARGV` as a subprocess in `cwd`, output captured."""
    return subprocess.Popen(cli_command(*argv), cwd=cwd, env=assets.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


@dataclass
class Done:
    argv: tuple[str, ...]
    pid: int
    returncode: int
    stdout: str
    stderr: str


def finish(proc: subprocess.Popen, timeout: float = PROCESS_TIMEOUT) -> Done:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} ran past {timeout}s; stderr: {err[-2000:]}")
    return Done(tuple(proc.args), proc.pid, proc.returncode, out, err)


def assert_one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("rlprune: error:"), repr(err)
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    return err


def search_argv(assets: Assets, run_dir: str | Path, *extra: str) -> list[str]:
    return ["search", "--model", assets.model, "--checkpoint", str(assets.dense),
            *SEARCH_FLAGS, "--run-dir", str(run_dir), *extra]


# -- files -------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` with its type, size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(folder))
        if path.is_dir():
            out[rel] = ("dir", st.st_mtime_ns)
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns,
                        hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def latest_episode(run: Path) -> int | None:
    """The episode `RUN/checkpoints/latest` names, or None."""
    try:
        name = (run / "checkpoints" / "latest").read_text().strip()
    except FileNotFoundError:
        return None
    return int(name.removeprefix("ep")) if name.startswith("ep") else None


def episodes_done(run: Path) -> int:
    try:
        return int(read_json(run / "status.json").get("episodes_done") or 0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def final_state(run: Path) -> dict:
    """The search state in the checkpoint `latest` points to."""
    name = (run / "checkpoints" / "latest").read_text().strip()
    return torch.load(run / "checkpoints" / name / "state.pt", map_location="cpu",
                      weights_only=False)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# -- a fork server ----------------------------------------------------------------------
def serve() -> None:
    """Fork server, run as `python -c "from agent_fixtures import serve; serve()"`.

    Every `rlprune` process pays seconds of imports (torch, stable-baselines3, fvcore,
    matplotlib, torch._dynamo on the first optimizer). This process pays them once, then forks
    one child per request line on stdin ({"id", "argv", "cwd", "out", "err"}); each child runs
    `rlprune.service.cli.main(argv)` in its own session with stdout/stderr sent to the named
    files and exits with its return code. Replies on stdout: {"id", "pid"} when forked,
    {"pid", "code"}
    when reaped (code as subprocess reports it: negative for a signal).
    """
    import threading

    import rlprune.models.data
    import rlprune.service.cli
    import rlprune.service.commands
    import rlprune.service.console
    import rlprune.service.dense
    import rlprune.service.lifecycle  # noqa: F401  (the point is to import them)

    rlprune.models.data.load_dataset("digits")  # imports scikit-learn's loader; no threads
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo
    out, lock = sys.stdout, threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                time.sleep(0.01)
                continue
            send({"pid": pid, "code": os.waitstatus_to_exitcode(status)})

    threading.Thread(target=reap, daemon=True).start()
    send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        with lock:  # never fork while the reaper is writing
            pid = os.fork()
        if pid == 0:
            _child(request)
        send({"id": request["id"], "pid": pid})


def _child(request: dict) -> None:
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        for fd, name in ((1, "out"), (2, "err")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False)  # fresh objects: no lock held by another
        sys.stderr = open(2, "w", closefd=False)  # thread of the server
        sys.stdin = open(os.devnull)
        from rlprune.service.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code or 0)


class Child:
    """A forked `rlprune` process, with the parts of Popen the tests use."""

    def __init__(self, server: ForkServer, pid: int, argv: list[str], out: Path, err: Path):
        self.server, self.pid, self.args, self.out, self.err = server, pid, argv, out, err

    @property
    def returncode(self) -> int | None:
        return self.server.codes.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stderr_text(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


class ForkServer:
    def __init__(self, assets: Assets, logs: Path):
        import threading

        self.logs, self.codes, self.pids = logs, {}, {}
        self.changed = threading.Condition()
        env = assets.env()
        env["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from agent_fixtures import serve; serve()"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.ready = False
        threading.Thread(target=self._read, daemon=True).start()
        self._next = 0

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.changed:
                if "ready" in msg:
                    self.ready = True
                elif "id" in msg:
                    self.pids[msg["id"]] = msg["pid"]
                else:
                    self.codes[msg["pid"]] = msg["code"]
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _wait_for(self, predicate, timeout: float, what: str):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate() or self.proc.poll() is not None,
                                         timeout):
                pytest.fail(f"fork server: {what} took over {timeout}s")
            if not predicate():
                pytest.fail(f"fork server died ({self.proc.returncode}) waiting for {what}")
            return predicate()

    def spawn(self, cwd: Path, *argv: str) -> Child:
        self._wait_for(lambda: self.ready, PROCESS_TIMEOUT, "start-up")
        self._next += 1
        rid = self._next
        out, err = self.logs / f"{rid}.out", self.logs / f"{rid}.err"
        request = {"id": rid, "argv": list(argv), "cwd": str(cwd), "out": str(out),
                   "err": str(err)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._wait_for(lambda: self.pids.get(rid), 30.0, "a fork")
        return Child(self, pid, list(argv), out, err)

    def finish(self, child: Child, timeout: float = PROCESS_TIMEOUT) -> Done:
        try:
            self._wait_for(lambda: child.pid in self.codes, timeout, f"{child.args}")
        except BaseException:
            child.kill()
            raise
        return Done(tuple(child.args), child.pid, self.codes[child.pid],
                    child.out.read_text(), child.err.read_text())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the fleet ---------------------------------------------------------------------------
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


def get_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    if "fleet" in _CACHE:
        fleet = _CACHE["fleet"]
        if isinstance(fleet, BaseException):
            raise fleet
        return fleet  # type: ignore[return-value]
    try:
        fleet = _build_fleet(get_assets(tmp_path_factory), tmp_path_factory.mktemp("fleet"))
    except BaseException as exc:  # every later user fails the same way, fast
        _CACHE["fleet"] = RuntimeError(f"building the fleet failed: {exc!r}")
        raise
    _CACHE["fleet"] = fleet
    return fleet


def _build_fleet(assets: Assets, root: Path) -> Fleet:
    from rlprune.service.jobs import Job

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
