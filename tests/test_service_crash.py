"""The service survives its own SIGKILL and a worker's: interrupted jobs are resumed from
their last checkpoint and finish with the same best policy as uninterrupted runs; queued
jobs still run; the registry and the run folders are intact."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from support.service import TINY_JOB, start_service

# long enough that neither job can finish while the other reaches episode 11, even on a busy
# machine (40 was not, beside another job)
LONG = {**TINY_JOB, "episodes": 80, "warmup": 10, "checkpoint_every": 5}


def _episodes(svc, job_id: str) -> int:
    return svc.job(job_id)["progress"].get("episodes_done") or 0


def _policy(svc, job_id: str) -> dict:
    return json.loads((svc.runs / job_id / "policy.json").read_text())


@pytest.mark.slow  # a minute or two (three jobs, the service killed and restarted)
def test_a_killed_service_resumes_its_jobs_to_the_same_result(tmp_path):
    runs = tmp_path / "runs"
    svc = start_service(runs, "--max-running", "2")
    try:
        first = [svc.submit({**LONG, "seed": seed}) for seed in (0, 1)]
        queued = svc.submit(TINY_JOB)
        deadline = time.monotonic() + 180
        while min(_episodes(svc, j) for j in first) < 11:  # past a checkpoint, mid-search
            assert time.monotonic() < deadline, [svc.job(j) for j in first]
            time.sleep(0.1)
        assert svc.job(queued)["state"] == "queued"
        svc.kill()
    finally:
        svc.stop()
    for job_id in first:  # the workers died with the service: nobody holds the runs' locks
        status = json.loads((runs / job_id / "status.json").read_text())
        assert status["episodes_done"] < LONG["episodes"]
    svc = start_service(runs, "--max-running", "2")
    try:
        for job_id in (*first, queued):
            assert svc.wait(job_id)["state"] == "finished"
        # the same jobs, never interrupted, find the same policies
        again = [svc.submit({**LONG, "seed": seed}) for seed in (0, 1)]
        for interrupted, clean in zip(first, again):
            svc.wait(clean)
            a, b = _policy(svc, interrupted), _policy(svc, clean)
            assert a["layers"] == b["layers"] and a["search"] == b["search"]
        assert len(svc.jobs()) == 5
    finally:
        svc.stop()


def test_a_worker_killed_alone_is_resumed(tmp_path):
    runs = tmp_path / "runs"
    svc = start_service(runs, "--max-running", "1")
    try:
        job_id = svc.submit(LONG)
        deadline = time.monotonic() + 180
        while _episodes(svc, job_id) < 11:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = json.loads((runs / job_id / "status.json").read_text())["pid"]
        # submitted as the service started, the job waited for the warm server to fork it
        # rather than start a fresh interpreter beside the warm server's imports
        parent = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text()
                      .splitlines() if line.startswith("PPid:"))
        assert int(parent) != svc.proc.pid
        os.kill(pid, signal.SIGKILL)
        job = svc.wait(job_id)
        assert job["progress"]["episodes_done"] == LONG["episodes"]
        # it continued from its checkpoint: after the second start, episodes go on past 10
        events = [json.loads(line) for line in (runs / job_id / "events.jsonl").open()]
        starts = [i for i, e in enumerate(events) if e.get("state") == "running"]
        assert len(starts) == 2
        resumed = [e["episode"] for e in events[starts[1]:] if e["kind"] == "episode"]
        assert resumed[0] > 10 and resumed[-1] == LONG["episodes"]
        clean = svc.submit(LONG)
        svc.wait(clean)
        assert _policy(svc, job_id)["layers"] == _policy(svc, clean)["layers"]
    finally:
        svc.stop()
