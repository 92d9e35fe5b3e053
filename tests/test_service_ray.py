"""`rlprune serve --executor ray`: the service's jobs as Ray tasks on a real local Ray
instance (the tests' shared one). The queue, the states, cancel and resume behave as with the
local executor; a bad address is one line and exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.service import TINY_JOB, start_service


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory, ray_cluster):
    runs = tmp_path_factory.mktemp("ray-service") / "runs"
    svc = start_service(runs, "--max-running", "1", "--executor", "ray", "--ray-address",
                        ray_cluster)
    yield svc
    svc.stop()


@pytest.mark.slow  # three jobs in turn on Ray (the cancel/resume test below runs on Ray too)
def test_jobs_run_on_ray_in_order_one_at_a_time(ray_service):
    """The second job's search has two env workers (its Ray task holds both CPUs)."""
    ids = [ray_service.submit(), ray_service.submit({**TINY_JOB, "workers": 2})]
    seen_running, deadline = 0, time.monotonic() + 240
    while time.monotonic() < deadline:
        every = {j["id"]: j["state"] for j in ray_service.jobs()}  # one snapshot
        states = [every[i] for i in ids]
        seen_running = max(seen_running, states.count("running"))
        if states == ["finished", "finished"]:
            break
        assert "failed" not in states, [ray_service.job(i) for i in ids]
        time.sleep(0.1)
    jobs = [ray_service.job(i) for i in ids]
    assert [j["state"] for j in jobs] == ["finished", "finished"] and seen_running == 1
    assert jobs[0]["started"] < jobs[1]["started"]
    assert all((ray_service.runs / i / "policy.json").is_file() for i in ids)
    config = json.loads((ray_service.runs / ids[1] / "config.json").read_text())
    assert config["workers"] == 2 and jobs[1]["progress"]["episodes_done"] == 6


def test_cancel_on_ray_is_resumable_and_resume_finishes(ray_service):
    job_id = ray_service.submit({**TINY_JOB, "episodes": 30, "warmup": 10})
    deadline = time.monotonic() + 120
    while (ray_service.job(job_id)["progress"].get("episodes_done") or 0) < 3:
        assert time.monotonic() < deadline, ray_service.job(job_id)
        time.sleep(0.1)
    # its worker process is the child of a Ray worker, not of the service
    pid = json.loads((ray_service.runs / job_id / "status.json").read_text())["pid"]
    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    assert parent != str(ray_service.proc.pid)
    assert b"ray" in Path(f"/proc/{parent}/cmdline").read_bytes()
    assert ray_service.request("POST", f"/v1/jobs/{job_id}/cancel")[0] == 202
    job = ray_service.wait(job_id, ("cancelled",))
    assert job["progress"]["episodes_done"] < 30
    assert (ray_service.runs / job_id / "checkpoints" / "latest").is_file()
    assert ray_service.request("POST", f"/v1/jobs/{job_id}/resume")[0] == 202
    assert ray_service.wait(job_id)["progress"]["episodes_done"] == 30


@pytest.mark.parametrize("argv, words", [
    (["--executor", "ray"], "--executor ray needs --ray-address (auto: the cluster this "
                            "machine belongs to; local: start one here; or host:port)"),
    (["--ray-address", "auto"], "--ray-address goes with --executor ray"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"],
     "cannot reach the Ray cluster at --ray-address 127.0.0.1:1 (Connection refused)")])
def test_bad_executor_settings_are_one_line_exit_2_and_write_nothing(cli, tmp_path, argv,
                                                                     words):
    code, _, err = cli("serve", "--runs", str(tmp_path / "runs"), *argv)
    assert code == 2 and err.strip().splitlines() == [f"rlprune: error: {words}"]
    assert not (tmp_path / "runs").exists()
