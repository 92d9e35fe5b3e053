"""A real `rlprune serve` on a free port, for the service tests (no mocks of HTTP or SQLite)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.assets import USER_MODELS

# a job that takes a few seconds: LeNet-300 on digits, every layer by the agent
TINY_JOB = {"model": "lenet300", "dataset": "digits", "fc_rule": "agent", "target": 0.8,
            "episodes": 6, "warmup": 2, "finetune_epochs": 0, "checkpoint_every": 2,
            "hidden": [16, 16], "batch_size": 8,
            # the selection stage and the int8 size are tested on their own
            "select_top_k": 0, "int8_size": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    runs: Path
    port: int
    token: str
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, *, token: str | None = "",
                headers: dict | None = None, raw: bytes | None = None) -> tuple[int, object]:
        """(status, decoded JSON or text)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        h = {"Content-Type": "application/json" if raw is None else "application/octet-stream"}
        if token is not None:
            h["Authorization"] = f"Bearer {token or self.token}"
        h.update(headers or {})
        if raw is not None:  # an upload: the server may answer (413) before it reads it all
            status, payload = self._upload(method, path, data, h)
        else:
            req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, payload = r.status, r.read()
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def _upload(self, method: str, path: str, data: bytes, headers: dict) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            try:
                conn.request(method, path, body=data, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused mid-body; its answer is already on the way
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def jobs(self) -> list[dict]:
        return self.request("GET", "/v1/jobs")[1]

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}")[1]

    def submit(self, config: dict | None = None, kind: str = "search", **headers) -> str:
        status, body = self.request("POST", "/v1/jobs", {"kind": kind,
                                                         "config": config or TINY_JOB},
                                    headers=headers or None)
        assert status == 202, body
        return body["id"]

    def wait(self, job_id: str, states=("finished",), timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if job["state"] in ("failed", "cancelled") and job["state"] not in states:
                raise AssertionError(f"job {job_id} ended {job['state']}: {job['error']}")
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {states}: {self.job(job_id)}")

    def kill(self) -> None:
        """SIGKILL the service (its workers die with it)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(runs: Path, *extra: str, port: int | None = None) -> Service:
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(USER_MODELS), os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    log = open(runs.parent / f"serve-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "rlprune", "serve", "--port", str(port),
                             "--runs", str(runs), *extra], env=env, stdout=log, stderr=log,
                            cwd=runs.parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rlprune serve exited {proc.returncode}: "
                                 f"{(runs.parent / f'serve-{port}.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("rlprune serve did not come up")
    token = (runs / "service-token").read_text().strip()
    return Service(runs, port, token, proc)
