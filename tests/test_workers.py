"""`workers=K`: K episodes at a time on K env copies, in local processes or Ray actors.

For a given K and seed the search is deterministic; a worker killed mid-round is replaced and
the result is unchanged; a search SIGKILLed after a checkpoint and resumed gives the same
rewards and best policy. Each with local processes and with a real local Ray instance
(`ray.init(num_cpus=2)`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.worker_search import EPISODES, tiny_search

from rlprune.agent.config import SearchConfig
from rlprune.service.bench.runner import run_bench
from rlprune.service.jobs.checkpoint_store import CheckpointStore

SCRIPT = Path(__file__).parent / "support" / "worker_search.py"


@pytest.fixture(scope="module")
def reference(one_thread) -> dict:
    """The uninterrupted K = 2 search (local processes): every later run must agree."""
    search = tiny_search(2)
    search.run()
    return {"rewards": search.state.rewards, "best": search.best}


def _killing(search, at: set[int]):
    """An on_episode hook that kills env worker 1 after the episodes in `at`."""
    def on_episode(record: dict) -> None:
        if record["episode"] in at:
            search._vec.kill_worker(1)
    return on_episode


def test_k2_is_deterministic_and_differs_from_k1(reference, one_thread):
    again = tiny_search(2)
    again.run()
    assert again.state.rewards == reference["rewards"]
    assert again.best == reference["best"]
    assert len(reference["rewards"]) == EPISODES
    one = tiny_search(1)
    one.run()
    assert one.state.rewards != reference["rewards"]  # K changes the exploration


def test_a_killed_worker_process_is_replaced_and_changes_nothing(reference, one_thread):
    search = tiny_search(2)
    search.on_episode = _killing(search, {2, 5})
    vec = search._envs()
    search.run()
    assert vec.restarts == 2
    assert search.state.rewards == reference["rewards"]
    assert search.best == reference["best"]


def _kill_after_checkpoint(tmp_path: Path, *extra: str) -> Path:
    """Run the K = 2 search as a script; SIGKILL it once its episode-4 checkpoint exists."""
    folder = tmp_path / "checkpoints"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(folder), "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = CheckpointStore(folder)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        latest = store.latest()
        if latest is not None and latest.name.endswith("04"):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10  # the killed search's env workers leave too
    while time.monotonic() < deadline and _workers_of(folder):
        time.sleep(0.1)
    assert not _workers_of(folder)
    return folder


def _workers_of(folder: Path) -> list[int]:
    """Live processes of the worker script (its forked env workers carry its command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ")[-1][0]
        except (OSError, ValueError, IndexError):
            continue
        if str(folder) in command and state != "Z":
            pids.append(int(entry.name))
    return pids


def _resume(folder: Path, ray_address: str | None = None):
    store = CheckpointStore(folder)
    latest = store.latest()
    search = tiny_search(2, ray_address)
    search.load(latest)
    search.run(checkpoints=store, resume_from=latest)
    return latest, search


def test_sigkill_and_resume_gives_the_same_search(tmp_path, reference, one_thread):
    latest, search = _resume(_kill_after_checkpoint(tmp_path))
    assert search.episodes_at_start == int(latest.name[2:]) < EPISODES
    assert search.state.rewards == reference["rewards"]
    assert search.best == reference["best"]


# -- the same on a real local Ray instance ------------------------------------------------
def test_ray_actors_give_the_local_result_and_survive_a_killed_actor(ray_cluster, reference,
                                                                      one_thread):
    killed = tiny_search(2, "auto")
    killed.on_episode = _killing(killed, {3})
    vec = killed._envs()
    killed.run()
    assert vec.restarts == 1
    assert killed.state.rewards == reference["rewards"]
    assert killed.best == reference["best"]


def test_ray_sigkill_and_resume_gives_the_same_search(tmp_path, ray_cluster, reference,
                                                      one_thread):
    folder = _kill_after_checkpoint(tmp_path, ray_cluster)
    latest, search = _resume(folder, "auto")
    assert search.episodes_at_start < EPISODES
    assert search.state.rewards == reference["rewards"]
    assert search.best == reference["best"]


def test_bad_workers_settings_are_one_line_and_write_nothing(cli, workdir, one_thread):
    cases = [(["--workers", "3", "--episodes", "10", "--warmup", "4"],
              "--episodes (10) must be a multiple of --workers 3"),
             (["--gpus-per-worker", "1"], "--gpus-per-worker needs --ray-address"),
             (["--workers", "2", "--episodes", "4", "--warmup", "2", "--ray-address",
               "127.0.0.1:1"], "cannot reach the Ray cluster at --ray-address 127.0.0.1:1")]
    for argv, words in cases:
        code, _, err = cli("search", "--model", "lenet300", "--dataset", "digits",
                           "--fc-rule", "agent", *argv)
        last = err.strip().splitlines()[-1]  # after the first case's pre-training
        assert code == 2 and words in last and last.startswith("rlprune: error:"), err
        assert "Traceback" not in err
    assert [p.name for p in (workdir / "runs").iterdir()] == ["pretrained"]  # no run folder


def test_a_bench_on_ray_gives_the_local_rows(tmp_path, tiny_dense, one_thread,
                                          ray_cluster):
    """`rlprune bench --ray-address`: every cell a Ray task on the local Ray instance; the
    same rows as the local bench (in the bench's order), each cell's run folder under --out
    as locally."""
    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=3, warmup=1,
                        checkpoint_every=3, finetune_epochs=1, hidden=(16, 16), batch_size=4)
    quiet = {"targets": [0.5], "methods": ["uniform", "ddpg"], "seeds": 1,
             "log": lambda line: None}
    local = run_bench(tiny_dense, base, out=tmp_path / "local", **quiet)
    lines: list[str] = []
    on_ray = run_bench(tiny_dense, SearchConfig(**{**base.__dict__, "ray_address": ray_cluster}),
                       out=tmp_path / "ray", **{**quiet, "log": lines.append})
    keys = ("method", "target", "seed", "test_accuracy", "pruned_accuracy", "sparsity")
    assert [[r[k] for k in keys] for r in on_ray["results"]] == [
        [r[k] for k in keys] for r in local["results"]]
    assert len(lines) == 2 and on_ray["speed"]["episode_s"] > 0
    assert sorted(p.name for p in (tmp_path / "ray" / "runs").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "runs").iterdir())


def test_a_ray_node_that_stops_answering_stops_the_search_resumably(tmp_path, ray_cluster,
                                                                     reference, one_thread):
    """An env actor SIGSTOPped mid-search (as a node cut off from the network looks: alive,
    silent): within --ray-timeout-s (2 s here, plus a round's wait) the job stops,
    `interrupted` with the reason, and resuming it gives the uninterrupted search."""
    from conftest import make_tiny_dense

    from rlprune.service.jobs.lifecycle import JobRunner
    from rlprune.service.jobs.resume import open_resume

    config = tiny_search(2, "auto", ray_timeout_s=2.0).config
    runner = JobRunner(config, make_tiny_dense())
    job = runner.create(tmp_path / "run")
    paused: list[int] = []

    def on_episode(event) -> None:
        if event.kind == "episode" and event.episode == 3 and not paused:
            vec = runner.search._vec
            paused.append(vec.backend.pause(vec.workers[0]))

    runner.callback = on_episode
    start = time.monotonic()
    try:
        with job:
            result = runner.run(job)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    # the old code hung for good; a busy 2-core box starts Ray actors slowly
    assert time.monotonic() - start < 120
    assert result.state == "interrupted" and "answered nothing for 2 s" in result.reason
    assert job.status()["state"] == "interrupted"
    found = open_resume(job.path, lambda c: make_tiny_dense())
    with found.job:
        resumed = found.runner.run(found.job, found.checkpoint)
    assert resumed.state == "finished"
    assert [h["reward"] for h in resumed.history] == reference["rewards"]


REAPED = """
import os, sys, time
from rlprune.agent.ray_workers import connect, import_ray
connect("local", num_cpus=1)
ray = import_ray()
actor = ray.remote(num_cpus=1)(type("A", (), {"pid": lambda self: os.getpid()})).remote()
print(ray.get(actor.pid.remote()), flush=True)
time.sleep(600)
"""


def test_a_sigkilled_search_leaves_no_process_of_its_local_ray(tmp_path):
    """`--ray-address local` starts a Ray instance for the run; SIGKILL of the run (Ray's
    dashboard and runtime-env agents outlived it before) leaves none of its processes."""
    from rlprune.agent.ray_reaper import descendants

    proc = subprocess.Popen([sys.executable, "-c", REAPED], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    actor = int(proc.stdout.readline())
    time.sleep(1.0)  # the reaper's first look
    left = descendants(proc.pid)
    assert actor in left and len(left) >= 5  # GCS, raylet, its agents, the actor, the reaper
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and [p for p in left if Path(f"/proc/{p}").exists()]:
        time.sleep(0.2)
    alive = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:60]
             for p in left if Path(f"/proc/{p}").exists()}
    assert not alive, alive
