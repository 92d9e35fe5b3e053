"""A real `rlprune serve` on a free port and a small HTTP client for it (the standard library
only); not a study: `service_load.py` imports it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


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
        """(status, decoded JSON or text); `token=None` sends none, "" the service's own."""
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(runs: Path, *extra: str) -> Service:
    """`rlprune serve --runs RUNS EXTRA...` in a child process (its log beside `runs`), once
    it answers /healthz."""
    runs, port = runs.resolve(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    log = runs.parent / f"serve-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rlprune", "serve", "--port", str(port),
                                 "--runs", str(runs), *extra], env=env, stdout=out,
                                stderr=out, cwd=runs.parent)
    try:
        _wait_until_up(proc, port, log)
        return Service(runs, port, (runs / "service-token").read_text().strip(), proc)
    except BaseException:
        proc.kill()  # never leave a service behind
        proc.wait()
        raise


def _wait_until_up(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rlprune serve exited {proc.returncode}: "
                             f"{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("rlprune serve did not come up within 120 s")
