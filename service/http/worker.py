"""One service job in its own process: `python -m rlprune.service.http.worker REQUEST.json`.

The request names the kind (search, baseline, bench), the config (SearchConfig fields, plus
`method` for a baseline and `targets`, `methods`, `seeds` for a bench), the run folder and
whether to resume it. The job goes through the same lifecycle as `rlprune search`, so its
run folder is the one the command line makes. SIGTERM stops a search at the next episode
boundary (with a checkpoint): that is how the service cancels. The worker dies with the
service (PR_SET_PDEATHSIG), so a killed service leaves no job running unseen.

Exit codes: 0 finished, 130 stopped (interrupted or cancelled, at any moment, set-up
included), 2 bad input (the message is the last line of the worker's log), anything else
failed. `--check` (the request's config on stdin) only checks the job's model and data:
the service's way of running no user code in its own process.
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.models.errors import UserError

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the service's restart still finds the job interrupted
        pass


def run(request: dict) -> int:
    from rlprune.service.jobs.dense_loader import load_dense
    from rlprune.service.jobs.events import append_event
    from rlprune.service.jobs.lifecycle import run_job
    from rlprune.service.jobs.resume import resume_job
    from rlprune.service.jobs.stop import SignalStop

    kind, run_dir = request["kind"], Path(request["run_dir"])
    settings = dict(request["config"])
    cache = run_dir.parent / "pretrained"  # the service's own cache of dense models

    log = LogLines()

    def dense_for(config: SearchConfig):
        run_dir.mkdir(parents=True, exist_ok=True)  # its event log shows the pre-training

        def on_pretrain(event) -> None:
            append_event(run_dir, event)
            log(event)

        return load_dense(config, on_pretrain, cache=cache)

    if kind == "bench":
        return _bench(settings, run_dir, cache, resume=bool(request.get("resume")))
    method = settings.pop("method", "ddpg") if kind == "baseline" else "ddpg"
    stopper = SignalStop(notify=_say_stopping)

    def on_start(opened) -> None:
        stopper.runner = opened.runner

    with stopper:
        if request.get("resume"):
            result = resume_job(run_dir, dense_for, on_start=on_start, callback=log)
        else:
            if kind == "baseline":
                settings.setdefault("warmup", settings.get("episodes", 0))
            config = SearchConfig.with_settings(**settings)
            config.validate()
            result = run_job(config, dense_for(config), method, run_dir=run_dir,
                             on_start=on_start, callback=log)
    return 0 if result.state == "finished" else 130


def _bench(settings: dict, out: Path, cache: Path, resume: bool = False) -> int:
    from rlprune.service.bench.plan import BenchConfig
    from rlprune.service.bench.runner import run_bench
    from rlprune.service.jobs.dense_loader import load_dense
    from rlprune.service.jobs.stop import SignalStop

    methods = settings.pop("methods", None)
    bench = BenchConfig(targets=tuple(settings.pop("targets", [0.9])),
                        methods=None if methods is None else tuple(methods),
                        seeds=settings.pop("seeds", 1), first_seed=settings.pop("first_seed", 0))
    base = SearchConfig.with_settings(**settings)
    base.checkpoint_every = base.episodes
    bench.validate(base)
    dense = load_dense(base, LogLines(), cache=cache)
    with SignalStop(notify=_say_stopping) as stopper:
        try:
            run_bench(dense, base, targets=list(bench.targets),
                      methods=bench.methods_for(base.granularity),
                      seeds=bench.seeds, first_seed=bench.first_seed, out=out,
                      log=_say, progress=LogLines,
                      on_runner=lambda runner: setattr(stopper, "runner", runner),
                      resume=resume)
        except KeyboardInterrupt:
            return 130
    return 0


class LogLines:
    """A job's progress in the worker's log (runs/.logs/ID.log): the plain lines of
    `events.plain_line` (a line per stage, one per tenth of its steps, how the job ended),
    `label` (a bench's cell) before each."""

    def __init__(self, label: str | None = None):
        self.label = label

    def __call__(self, event) -> None:
        from rlprune.service.jobs.events import plain_line

        line = plain_line(event)
        if line is not None:
            _say(f"[{self.label}] {line}" if self.label else line)

    def close(self) -> None:
        pass


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _say_stopping(signal_name: str) -> None:
    from rlprune.service.jobs.stop import stopping_message

    print(stopping_message(signal_name), file=sys.stderr, flush=True)


def _stop_now(signum: int, frame) -> None:
    raise KeyboardInterrupt


def check(text: str) -> int:
    """`--check`: the job's model and data checked (`jobcheck.check_job`) for the service,
    which runs no user code itself. Exit 0, or 2 with the refusal on stderr."""
    from rlprune.service.http.jobcheck import check_job

    check_job(SearchConfig.from_json(json.loads(text)))
    return 0


def main(argv: list[str]) -> int:
    try:
        # The executor starts workers with SIGTERM and SIGINT blocked (`start_worker`, and
        # `warm_start` forks them so), so a
        # cancel that comes before this line waits here and stops the job cleanly (exit 130).
        for signum in STOP_SIGNALS:
            signal.signal(signum, _stop_now)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        die_with_parent()
        if argv[:1] == ["--check"]:
            return check(sys.stdin.read())
        return run(json.loads(Path(argv[0]).read_text()))
    except UserError as exc:
        print(f"rlprune: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # stopped during set-up (or a second signal): resumable
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
