"""The README's screenshots of the service's page, from real jobs (README, "Run it as a service").

    python studies/page_screenshots.py [model=lenet5] [dataset=mnist5k] [episodes=120]
        [warmup=40] [targets=0.9,0.95] [runs=runs/screenshots] [out=docs]

Starts `rlprune serve` on a free port over `runs` (its dense models pre-trained once into
runs/pretrained there), submits one search per target (agent-pruned FC layers, the README's
curl example), opens the page in Debian's Chromium (headless, Playwright) and saves:

    OUT/service-job-page.png   the first job's page while its search runs (stage, progress,
                               the reward curve so far)
    OUT/service-job-done.png   the same page once the job finished (result table, files)
    OUT/service-compare.png    the jobs compared (best reward per episode, result tables)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ARGS = {"model": "lenet5", "dataset": "mnist5k", "episodes": 120, "warmup": 40,
        "targets": "0.9,0.95", "runs": "runs/screenshots", "out": "docs"}


def parse_args(argv: list[str]) -> dict:
    args = dict(ARGS)
    for pair in argv:
        key, sep, value = pair.partition("=")
        if not sep or key not in ARGS:
            raise SystemExit(f"expected KEY=VALUE with KEY one of {', '.join(ARGS)}, got {pair!r}")
        args[key] = value
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    runs, out = Path(args["runs"]).resolve(), Path(args["out"])
    runs.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(runs / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "rlprune", "serve", "--port", str(port),
                             "--runs", str(runs), "--max-running", "1"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url)
        token = (runs / "service-token").read_text().strip()
        ids = [_submit(url, token, {"model": args["model"], "dataset": args["dataset"],
                                    "fc_rule": "agent", "target": float(t),
                                    "episodes": int(args["episodes"]),
                                    "warmup": int(args["warmup"])})
               for t in str(args["targets"]).split(",")]
        _submitted_shots(url, token, ids, out, int(args["warmup"]))
    finally:
        proc.terminate()
        proc.wait(30)


def _submitted_shots(url: str, token: str, ids: list[str], out: Path, warmup: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1100, "height": 1000})
        written = shoot(context, url, token, ids, out, running_at=warmup + 20)
        browser.close()
    print(json.dumps({"jobs": ids, "screenshots": [str(p) for p in written]}))


def shoot(context, url: str, token: str, ids: list[str], out: Path, *,
          running_at: int) -> list[Path]:
    """The three screenshots, in a Playwright browser `context`: the first job's page once
    it shows episode `running_at`, the same once every job finished, the jobs compared."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{url}/?token={token}")
    page.goto(f"{url}/#job={ids[0]}")
    page.wait_for_function("parseInt(document.getElementById('job-episode').textContent) >= "
                           f"{running_at}", timeout=1_800_000)
    time.sleep(1)
    shots = [out / name for name in ("service-job-page.png", "service-job-done.png",
                                     "service-compare.png")]
    page.screenshot(path=str(shots[0]), full_page=True)
    for job_id in ids:
        _wait_finished(url, token, job_id)
    page.reload()
    expect(page.locator("#job-state")).to_have_text("finished")
    expect(page.locator("#curve .scatterlayer .trace")).to_have_count(3)
    page.screenshot(path=str(shots[1]), full_page=True)
    page.goto(f"{url}/#compare={','.join(ids)}")
    expect(page.locator("#compare-curve .scatterlayer .trace")).to_have_count(len(ids))
    time.sleep(1)
    page.screenshot(path=str(shots[2]), full_page=True)
    page.close()
    return shots


def _call(url: str, token: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, method="POST" if body else "GET",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def _submit(url: str, token: str, config: dict) -> str:
    return _call(url, token, "/v1/jobs", {"kind": "search", "config": config})["id"]


def _wait_finished(url: str, token: str, job_id: str) -> None:
    while (state := _call(url, token, f"/v1/jobs/{job_id}")["state"]) != "finished":
        if state in ("failed", "cancelled"):
            raise SystemExit(f"job {job_id} ended {state}")
        time.sleep(2)


def _wait_up(url: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("rlprune serve did not come up")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
