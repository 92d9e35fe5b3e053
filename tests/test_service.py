"""The HTTP service, end to end: a real `rlprune serve` on a free port with a real SQLite
registry and real worker processes (tests/support/service.py)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from support import snapshot
from support.service import TINY_JOB, start_service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    runs = tmp_path_factory.mktemp("service") / "runs"
    svc = start_service(runs, "--max-running", "2", "--upload-limit-mb", "2")
    yield svc
    svc.stop()


def test_health_version_and_the_token(service):
    assert service.request("GET", "/healthz", token=None) == (200, {"ok": True})
    for token in (None, "wrong"):
        status, body = service.request("GET", "/version", token=token)
        assert status == 401 and "bearer token" in body["detail"]
    status, body = service.request("GET", "/version")
    assert status == 200 and body["api"] == "v1" and body["rlprune"]
    mode = stat.S_IMODE(os.stat(service.runs / "service-token").st_mode)
    assert mode == 0o600
    log = (service.runs.parent / f"serve-{service.port}.log").read_text()
    assert service.token not in log  # the token is never logged
    assert f"open the page: {service.url}/?token=TOKEN" in log  # where the page is
    status, spec = service.request("GET", "/openapi.json")
    assert status == 200 and {"/v1/jobs", "/v1/jobs/{job_id}/events",
                              "/v1/checkpoints"} <= set(spec["paths"])
    assert service.request("GET", "/openapi.json", token=None)[0] == 401
    status, html = service.request("GET", "/docs")
    assert status == 200 and "swagger" in html.lower()
    assert service.request("GET", "/", token=None)[0] == 401


def test_a_job_runs_and_its_results_can_be_fetched(service):
    job_id = service.submit()
    assert service.job(job_id)["state"] in ("queued", "running")
    job = service.wait(job_id)
    assert job["progress"]["episodes_done"] == TINY_JOB["episodes"]
    assert abs(job["progress"]["achieved_sparsity"] - 0.8) < 1e-3
    status, policy = service.request("GET", f"/v1/jobs/{job_id}/policy")
    assert status == 200 and policy["method"] == "ddpg"
    status, text = service.request("GET", f"/v1/jobs/{job_id}/policy?format=yaml")
    assert status == 200 and "format: rlprune.policy/2" in text
    status, report = service.request("GET", f"/v1/jobs/{job_id}/artifacts/report.md")
    assert status == 200 and "lenet300 on digits" in report
    # the run folder is the one `rlprune search` leaves
    files = {p.name for p in (service.runs / job_id).iterdir()}
    assert {"config.json", "status.json", "policy.json", "pruned.rlprune", "report.md",
            "events.jsonl", "checkpoints", "tb"} <= files


def test_server_sent_events_one_per_episode_and_state(service):
    job_id = service.submit()
    req = urllib.request.Request(f"{service.url}/v1/jobs/{job_id}/events",
                                 headers={"Authorization": f"Bearer {service.token}"})
    events = []
    with urllib.request.urlopen(req, timeout=180) as stream:
        for line in stream:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    episodes = [e for e in events if e.get("kind") == "episode"]
    assert [e["episode"] for e in episodes] == list(range(1, TINY_JOB["episodes"] + 1))
    assert episodes[-1]["sparsities"] and "best_reward" in episodes[-1]
    states = [e["state"] for e in events if e.get("kind") in ("state", "job")]
    assert states[-1] == "finished" and "running" in states


def test_an_idempotency_key_makes_a_retry_one_job(service):
    before = len(service.jobs())
    first = service.submit(**{"Idempotency-Key": "retry-me"})
    again = service.submit(**{"Idempotency-Key": "retry-me"})
    assert first == again and len(service.jobs()) == before + 1
    service.wait(first)


@pytest.mark.parametrize("body, words", [
    ({"kind": "search", "config": {"model": "nope"}}, "unknown model 'nope'"),
    ({"kind": "search", "config": {"target": 1.5}}, "target must be in (0, 1)"),
    ({"kind": "search", "config": {"episodez": 3}}, "unknown setting episodez"),
    ({"kind": "search", "config": {"episodes": "many"}}, "episodes must be a whole number"),
    ({"kind": "search", "config": {"weights": "/etc/passwd"}}, "weights must name an upload"),
    ({"kind": "search", "config": {"model": "os:system"}}, "the factory failed"),
    ({"kind": "search", "config": {"method": "lamp"}}, "method belongs to a baseline"),
    ({"kind": "baseline", "config": {}}, "a baseline needs method"),
    ({"kind": "bench", "config": {"targets": [2]}}, "target must be in (0, 1)"),
    ({"kind": "train", "config": {}}, "kind"),
    ({"kind": "search", "config": {"model": "<Net>"}}, "unknown model"),
])
def test_bad_submissions_are_one_4xx_message_and_queue_nothing(service, body, words):
    before = len(service.jobs())
    status, reply = service.request("POST", "/v1/jobs", body)
    assert 400 <= status < 500 and words in reply["detail"], reply
    assert "Traceback" not in reply["detail"] and "\n" not in reply["detail"]
    assert len(service.jobs()) == before


def test_malformed_json_is_a_4xx(service):
    status, reply = service.request("POST", "/v1/jobs", raw=b"{not json",
                                    headers={"Content-Type": "application/json"})
    assert status == 422 and isinstance(reply["detail"], str)


def test_artifact_names_cannot_leave_the_run_folder(service):
    job_id = service.submit()
    service.wait(job_id)
    run = service.runs / job_id
    (run / "outside").symlink_to("/etc/passwd")
    for name in ("../registry.sqlite3", "..%2Fregistry.sqlite3", "%2Fetc%2Fpasswd", "outside",
                 "checkpoints/../../registry.sqlite3"):
        status, reply = service.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}")
        assert status in (400, 404), (name, status)
    assert service.request("GET", f"/v1/jobs/{job_id}/artifacts/nope.txt")[0] == 404
    assert service.request("GET", "/v1/jobs/nope")[0] == 404


def test_uploads_are_stored_by_sha256_checked_and_limited(service, tmp_path):
    from rlprune.models.registry import build_model

    buffer = io.BytesIO()
    torch.save(build_model("lenet300").state_dict(), buffer)
    status, body = service.request("POST", "/v1/checkpoints", raw=buffer.getvalue())
    assert status == 201 and body["weights"].startswith("sha256:")
    assert (service.runs / "uploads" / f"{body['sha256']}.pt").is_file()
    job_id = service.submit({**TINY_JOB, "weights": body["weights"]})
    assert service.wait(job_id)["config"]["weights"].endswith(f"{body['sha256']}.pt")
    # weights that do not fit the model are refused at submission
    status, reply = service.request("POST", "/v1/jobs", {"kind": "search", "config": {
        **TINY_JOB, "model": "lenet5", "weights": body["weights"]}})
    assert status == 422 and "does not fit the model" in reply["detail"]
    before = snapshot(service.runs / "uploads")
    status, reply = service.request("POST", "/v1/checkpoints", raw=b"x" * (3 * 1024 * 1024))
    assert status == 413 and "limit" in reply["detail"]
    status, reply = service.request("POST", "/v1/checkpoints", raw=b"not a state dict")
    assert status == 422
    assert snapshot(service.runs / "uploads") == before  # nothing kept of either


def test_cancel_stops_a_running_job_resumably_and_resume_finishes_it(service):
    job_id = service.submit({**TINY_JOB, "episodes": 60, "warmup": 20})
    deadline = time.monotonic() + 120
    while (service.job(job_id)["progress"].get("episodes_done") or 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, body = service.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert status == 202
    job = service.wait(job_id, ("cancelled",))
    done = job["progress"]["episodes_done"]
    assert done < 60 and (service.runs / job_id / "checkpoints" / "latest").is_file()
    assert service.request("POST", f"/v1/jobs/{job_id}/cancel")[0] == 409
    assert service.request("POST", f"/v1/jobs/{job_id}/resume")[0] == 202
    assert service.request("POST", f"/v1/jobs/{job_id}/resume")[0] == 409  # queued/running
    job = service.wait(job_id)
    assert job["progress"]["episodes_done"] == 60
    assert service.request("POST", f"/v1/jobs/{job_id}/resume")[0] == 409  # finished


def test_a_bench_job_cancelled_in_its_search_resumes_and_keeps_its_finished_cell(service):
    config = {**TINY_JOB, "episodes": 30, "warmup": 10, "targets": [0.8],
              "methods": ["uniform", "ddpg"], "seeds": 1}
    job_id = service.submit(config, kind="bench")
    search = service.runs / job_id / "runs" / "ddpg-0.8-seed0" / "status.json"
    deadline = time.monotonic() + 180
    while not (search.is_file() and
               (json.loads(search.read_text()).get("episodes_done") or 0) >= 3):
        assert time.monotonic() < deadline, service.job(job_id)
        time.sleep(0.1)
    kept = (service.runs / job_id / "runs" / "uniform-0.8-seed0" / "policy.json").stat()
    assert service.request("POST", f"/v1/jobs/{job_id}/cancel")[0] == 202
    service.wait(job_id, ("cancelled",))
    assert service.request("POST", f"/v1/jobs/{job_id}/resume")[0] == 202
    service.wait(job_id)
    report = json.loads((service.runs / job_id / "bench.json").read_text())
    assert [r["method"] for r in report["results"]] == ["uniform", "ddpg"]
    assert json.loads(search.read_text())["episodes_done"] == 30
    again = (service.runs / job_id / "runs" / "uniform-0.8-seed0" / "policy.json").stat()
    assert again.st_mtime_ns == kept.st_mtime_ns  # kept, not run again


def test_at_most_max_running_jobs_run_at_once_in_order(service):
    ids = [service.submit() for _ in range(4)]
    seen_running = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = {j["id"]: j["state"] for j in service.jobs()}
        seen_running = max(seen_running, sum(s == "running" for s in states.values()))
        if all(states[i] == "finished" for i in ids):
            break
        time.sleep(0.1)
    assert all(service.job(i)["state"] == "finished" for i in ids)
    assert seen_running <= 2
    started = [service.job(i)["started"] for i in ids]
    assert started == sorted(started)  # submission order


def test_the_cli_is_a_client(service, tmp_path):
    env = {**os.environ, "RLPRUNE_TOKEN": service.token}

    def rlprune(*argv):
        return subprocess.run([sys.executable, "-m", "rlprune", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    flags = ["--model", "lenet300", "--dataset", "digits", "--fc-rule", "agent", "--episodes",
             "4", "--warmup", "2", "--finetune-epochs", "0", "--select-top-k", "0",
             "--no-int8-size"]
    done = rlprune("submit", "--server", service.url, *flags)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1]
    service.wait(job_id)
    listed = rlprune("list", "--server", service.url)
    assert job_id in listed.stdout and "finished" in listed.stdout
    status = json.loads(rlprune("status", job_id, "--server", service.url).stdout)
    assert status["state"] == "finished"
    done = rlprune("export", job_id, "--server", service.url, "--out", "p.json")
    assert done.returncode == 0 and json.loads((tmp_path / "p.json").read_text())["format"]
    bad = subprocess.run([sys.executable, "-m", "rlprune", "list", "--server", service.url],
                         env={k: v for k, v in env.items() if k != "RLPRUNE_TOKEN"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "token" in bad.stderr


def _stream(service, job_id: str, last_id: str | None = None) -> list[tuple[str, str, dict]]:
    """(id, event, data) of every event the job's stream sends, from `last_id` on."""
    headers = {"Authorization": f"Bearer {service.token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    req = urllib.request.Request(f"{service.url}/v1/jobs/{job_id}/events", headers=headers)
    out, block = [], {}
    with urllib.request.urlopen(req, timeout=180) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if not line:
                out.append((block["id"], block["event"], json.loads(block["data"])))
                block = {}
            else:
                key, _, value = line.partition(": ")
                block[key] = value
    return out


def test_a_finished_job_says_its_stages_result_and_files(service):
    job_id = service.submit({**TINY_JOB, "finetune_epochs": 1})
    result = service.wait(job_id)["result"]
    accuracy = result["accuracy"]
    assert {"dense", "pruned", "finetuned"} <= set(accuracy)
    assert all(0.5 < accuracy[k] <= 1 for k in ("dense", "pruned", "finetuned"))
    rows = dict(result["rows"])  # the table the command line prints
    assert rows["test accuracy, fine-tuned"] == f"{100 * accuracy['finetuned']:.2f}%"
    assert abs(result["achieved"]["sparsity"] - 0.8) < 1e-3
    assert result["size_mb"]["dense"] > result["size_mb"]["file_mb"] > 0
    assert set(result["latency_ms"]) == {"batch1", "batch32"}
    files = {f["name"]: f for f in result["files"]}
    assert [f["name"] for f in result["files"]][:4] == ["report.md", "rewards.png",
                                                        "sparsity.png", "policy.json"]
    assert files["policy.json"]["bytes"] == (service.runs / job_id / "policy.json").stat().st_size
    assert "status.json" not in files and ".lock" not in files
    events = [data for _, kind, data in _stream(service, job_id) if kind == "run"]
    stages = [e for e in events if e["kind"] == "stage"]
    assert [e["stage"] for e in stages] == ["search", "finetune", "export"]
    assert stages[0]["steps"] == TINY_JOB["episodes"] and stages[1]["steps"] == 1
    assert stages[-1]["accuracy"]["finetuned"] == accuracy["finetuned"]
    assert [e["epoch"] for e in events if e["kind"] == "finetune_epoch"] == [1]
    history = service.request("GET", f"/v1/jobs/{job_id}/episodes")[1]
    assert history["episode"] == list(range(1, TINY_JOB["episodes"] + 1))
    assert history["reward"] == [e["reward"] for e in events if e["kind"] == "episode"]


def test_each_artifact_has_its_content_type(service):
    job_id = service.submit()
    files = {f["name"]: f["url"] for f in service.wait(job_id)["result"]["files"]}
    model = next(name for name in files if name.startswith("pruned."))
    expected = {"report.md": "text/markdown", "rewards.png": "image/png",
                "policy.json": "application/json", "events.jsonl": "application/x-ndjson",
                model: "application/octet-stream"}
    for name, kind in expected.items():
        req = urllib.request.Request(service.url + files[name],
                                     headers={"Authorization": f"Bearer {service.token}"})
        with urllib.request.urlopen(req, timeout=60) as reply:
            assert reply.headers["Content-Type"].split(";")[0] == kind, name
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            disposition = reply.headers["Content-Disposition"]
            assert disposition.startswith("attachment" if name == model else "inline"), name
            assert reply.read() == (service.runs / job_id / name).read_bytes()


def test_an_idempotency_key_sent_with_another_job_is_a_409(service):
    first = service.submit(**{"Idempotency-Key": "one-job-only"})
    before = len(service.jobs())
    status, reply = service.request("POST", "/v1/jobs",
                                    {"kind": "search", "config": {**TINY_JOB, "target": 0.5}},
                                    headers={"Idempotency-Key": "one-job-only"})
    assert status == 409, reply
    assert "one-job-only" in reply["detail"] and first in reply["detail"]
    assert len(service.jobs()) == before
    service.wait(first)


def test_the_event_stream_resumes_after_the_last_event_id(service):
    job_id = service.submit()
    service.wait(job_id)
    whole = _stream(service, job_id)
    run = [(i, data) for i, kind, data in whole if kind == "run"]
    middle = run[len(run) // 2][0]
    rest = [(i, data) for i, kind, data in _stream(service, job_id, middle) if kind == "run"]
    assert rest == run[len(run) // 2 + 1:]
    assert _stream(service, job_id, run[-1][0])[-1][2]["state"] == "finished"  # state only
    for bad in ("x", "-1", str(int(middle) - 1)):
        req = urllib.request.Request(f"{service.url}/v1/jobs/{job_id}/events", headers={
            "Authorization": f"Bearer {service.token}", "Last-Event-ID": bad})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 400 and bad in json.loads(refused.value.read())["detail"]
