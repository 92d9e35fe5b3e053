"""What the API says of a job (`GET /v1/jobs/{id}`): its record, its progress (the stage it is
in, from the run's status.json) and its result (the accuracies as soon as they are known; at
the end the result table, the file sizes and latencies, and the run's files with their URLs),
and how each of the run's files is served (its content type).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rlprune.service.http.job_registry import JobRecord

PROGRESS = ("stage", "step", "steps", "episodes_done", "episodes", "best_reward", "best_episode",
            "achieved_sparsity", "method")
# the run's files a page links first, in this order; then any other top-level file
FIRST_FILES = ("report.md", "rewards.png", "sparsity.png", "policy.json")
HIDDEN_FILES = (".lock", "status.json")
# by suffix; anything else is application/octet-stream (a download)
CONTENT_TYPES = {".md": "text/markdown; charset=utf-8", ".png": "image/png",
                 ".json": "application/json", ".jsonl": "application/x-ndjson",
                 ".csv": "text/csv; charset=utf-8", ".yaml": "application/yaml",
                 ".txt": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
                 ".html": "text/plain; charset=utf-8",  # never rendered as the page's origin
                 ".onnx": "application/octet-stream", ".zip": "application/zip"}
INLINE = (".md", ".png", ".json", ".jsonl", ".csv", ".yaml", ".txt", ".log")


class JobView(BaseModel):
    id: str
    kind: str
    state: str
    run_dir: str
    config: dict[str, Any]
    error: str | None = None
    created: float
    started: float | None = None
    ended: float | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    """`accuracy` (test: dense, pruned, fine-tuned, as each is known), and once the job is
    finished `achieved` (sparsity, params, FLOPs), `rows` (the result table the command line
    prints), `size_mb` and `latency_ms` (deployment.json), `files` (name, bytes, url)."""


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def job_view(record: JobRecord) -> JobView:
    run = Path(record.run_dir)
    status = _read(run / "status.json")
    if status is None and (run / "status.json").exists():
        progress: dict = {"damaged": "status.json cannot be read"}
    else:
        progress = {k: status[k] for k in PROGRESS if status and status.get(k) is not None}
    return JobView(**record.to_json(), progress=progress,
                   result=job_result(record.id, run, status or {}))


def job_result(job_id: str, run: Path, status: dict) -> dict:
    """The job's result so far (see JobView.result)."""
    accuracy = status.get("accuracy")
    result: dict = {"accuracy": accuracy if isinstance(accuracy, dict) else {}}
    policy = _read(run / "policy.json")
    if not policy or not isinstance(policy.get("accuracy"), dict):
        return result
    from rlprune.service.jobs.report import result_rows

    deploy = _read(run / "deployment.json")
    result["accuracy"] = {k: v for k, v in policy["accuracy"].items() if v is not None}
    result["achieved"] = policy.get("achieved")
    try:
        result["rows"] = [list(row) for row in result_rows(policy, deploy)]
    except (KeyError, TypeError, ValueError):  # a policy or deployment.json from elsewhere
        result["rows"] = []
    if deploy:
        result["size_mb"] = {**deploy.get("size_mb", {}),
                             **{k: deploy[k] for k in ("file_mb", "int8_mb") if k in deploy}}
        result["latency_ms"] = deploy.get("latency_ms")
    result["files"] = run_files(job_id, run)
    return result


def run_files(job_id: str, run: Path) -> list[dict]:
    """The run folder's top-level files, the ones a user opens first first."""
    files = [p for p in run.iterdir() if p.is_file() and not p.is_symlink()
             and p.name not in HIDDEN_FILES and not p.name.startswith(".")]
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    files.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    return [{"name": p.name, "bytes": p.stat().st_size,
             "url": f"/v1/jobs/{job_id}/artifacts/{p.name}"} for p in files]


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
