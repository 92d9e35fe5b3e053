"""Run folders and job states under a hostile schedule: every move of a job's state against the
table of allowed moves (a real SQLite registry), every way a worker can end against the state
the executor gives its job, and a worker stopped before its first instruction.

The Ray cases (a node that stops answering, a SIGKILLed search's local Ray processes) are in
tests/test_workers.py, beside the shared Ray instance.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time

import pytest
from support.service import TINY_JOB

from rlprune.service.http.job_registry import MOVES, STATES, Registry
from rlprune.service.http.scheduler import LocalExecutor, start_worker


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry.sqlite3")
    yield reg
    reg.close()


def _job_in(registry: Registry, tmp_path, state: str) -> str:
    """A job brought to `state` by legal moves only."""
    record, _ = registry.submit("search", {}, tmp_path / "runs", None)
    path = {"queued": [], "running": ["running"], "finished": ["running", "finished"],
            "failed": ["running", "failed"], "interrupted": ["running", "interrupted"],
            "cancelled": ["cancelled"]}[state]
    for step in path:
        assert registry.set_state(record.id, step)
    assert registry.get(record.id).state == state
    return record.id


@pytest.mark.parametrize("source,target", list(itertools.product(STATES, STATES)))
def test_a_state_moves_only_as_the_table_allows(registry, tmp_path, source, target):
    job_id = _job_in(registry, tmp_path, source)
    moved = registry.set_state(job_id, target)
    assert moved == (target in MOVES[source])
    assert registry.get(job_id).state == (target if moved else source)


def test_racing_moves_from_threads_each_take_one_legal_path(registry, tmp_path):
    """Eight threads race cancel (queued -> cancelled) against launch (queued -> running) and
    resume (cancelled -> queued) on 20 jobs: each ends in a state its moves allow."""
    ids = [_job_in(registry, tmp_path, "queued") for _ in range(20)]
    log: list[tuple[str, str]] = []

    def race(seed: int) -> None:
        for i, job_id in enumerate(ids * 3):
            target = ("cancelled", "running", "queued")[(i + seed) % 3]
            if registry.set_state(job_id, target):
                log.append((job_id, target))

    threads = [threading.Thread(target=race, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job_id in ids:  # replay the moves that happened: each was legal from the one before
        state = "queued"
        for moved_id, target in log:
            if moved_id == job_id:
                assert target in MOVES[state], (state, target)
                state = target
        assert registry.get(job_id).state == state


# (what happened, exit code, cancel asked, the run's status.json state, the job's state then)
ENDINGS = [
    ("finished", 0, False, "finished", "finished"),
    ("cancelled, stopped cleanly", 130, True, "interrupted", "cancelled"),
    ("cancelled, SIGTERM before its handler", -signal.SIGTERM, True, None, "cancelled"),
    ("SIGTERM from someone else, stopped cleanly", 130, False, "interrupted", "interrupted"),
    ("SIGKILLed mid-run", -signal.SIGKILL, False, "running", "queued"),
    ("aborted (user code)", -signal.SIGABRT, False, "running", "failed"),
    ("segfault", -signal.SIGSEGV, False, "running", "failed"),
    ("bad input", 2, False, None, "failed"),
    ("a failure it reported", 1, False, "failed", "failed"),
    ("vanished mid-run (Ray ended the driver)", 1, False, "running", "queued"),
]


@pytest.mark.parametrize("case", ENDINGS, ids=[c[0] for c in ENDINGS])
def test_how_a_worker_ended_decides_the_jobs_state(case, registry, tmp_path):
    _, code, cancelled, run_state, expected = case
    runs = tmp_path / "runs"
    executor = LocalExecutor(runs, registry)
    job_id = _job_in(registry, tmp_path, "running")
    run = runs / job_id
    if run_state is not None:
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"state": run_state, "episodes_done": 3}))
    if cancelled:
        executor.cancelling.add(job_id)
    executor._ended(job_id, code)
    assert registry.get(job_id).state == expected


def test_a_worker_stopped_twice_without_progress_is_not_resumed_again(registry, tmp_path):
    runs = tmp_path / "runs"
    executor = LocalExecutor(runs, registry)
    job_id = _job_in(registry, tmp_path, "running")
    (runs / job_id).mkdir(parents=True)
    (runs / job_id / "status.json").write_text('{"state": "running", "episodes_done": 3}')
    executor._ended(job_id, -signal.SIGKILL)
    assert registry.get(job_id).state == "queued"
    assert registry.set_state(job_id, "running")
    executor._ended(job_id, -signal.SIGKILL)  # again at episode 3
    job = registry.get(job_id)
    assert job.state == "failed" and "without progress" in job.error


def test_sigterm_at_a_workers_first_instruction_stops_it_cleanly(tmp_path):
    """The executor starts workers with SIGTERM blocked: a cancel sent the moment the process
    exists waits for the worker's handler and ends it with 130 (a stop), never -15."""
    for attempt in range(3):
        request = tmp_path / f"request-{attempt}.json"
        request.write_text(json.dumps({"kind": "search", "config": TINY_JOB,
                                       "run_dir": str(tmp_path / f"run-{attempt}"),
                                       "resume": False}))
        proc = start_worker(request, tmp_path / "worker.log", None)
        time.sleep(0.05 * attempt)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 130, (tmp_path / "worker.log").read_text()[-1000:]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # ours unblocked


def test_the_workers_check_mode_refuses_in_one_line(tmp_path):
    """`python -m rlprune.service.http.worker --check`: the service's child-process check."""
    import subprocess

    bad = {**TINY_JOB, "model": "rlprune_bad_models:lone_linear", "fc_rule": "3sigma"}
    from support.assets import USER_MODELS

    proc = subprocess.run([sys.executable, "-m", "rlprune.service.http.worker", "--check"],
                          input=json.dumps(bad), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(USER_MODELS)},
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [  # the service's words: field names
        "rlprune: error: the agent controls no layers (no Conv2d here); use `fc_rule` agent "
        "to let it prune the Linear layers"]
