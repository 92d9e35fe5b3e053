"""What the command line shows while a job runs, and how it answers ^C and SIGTERM.

The library reports progress as `Event`s and stops when asked; here those become a line per
stage and tqdm bars on a terminal, or plain lines on a pipe (stderr), and signals become stop
requests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.events import plain_line, stage_of, step_figures, step_of
from rlprune.service.jobs.files import read_json
from rlprune.service.jobs.run_folder import MODEL_FILE, Job

if TYPE_CHECKING:
    from rlprune.service.jobs.events import Event


class Progress:
    """A job's progress on stderr, from its `Event`s: each stage's message once; then, on a
    terminal, a tqdm bar per stage with steps, and elsewhere (a pipe, a log file) plain lines,
    one per tenth of a stage's steps (`events.plain_line`), never a carriage return. `label`
    names the job (a bench's cell) before each line; `quiet` shows nothing; `terminal`
    overrides whether stderr is one. Call it with each Event; `close()` when the job ends."""

    def __init__(self, label: str | None = None, *, quiet: bool = False,
                 terminal: bool | None = None):
        self.label, self.quiet = label, quiet
        self.terminal = _is_terminal() if terminal is None else terminal
        self.bar: tqdm | None = None

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if not self.terminal:
            line = plain_line(event)
            if line is not None and event.kind != "state":  # the command says how it ended
                self._say(line)
        elif event.kind == "stage":
            self.close()
            self._say(plain_line(event) or "")
        elif event.kind == "state" and event.state != "running":
            self.close()
        elif step_of(event) is not None:
            self._advance(event)

    def _advance(self, event: Event) -> None:
        done, total, unit = step_of(event) or (0, 0, "")
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done - 1, desc=self.label or stage_of(event),
                            unit=unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in step_figures(event).items()},
                             refresh=False)
        self.bar.update(done - self.bar.n)

    def _say(self, line: str) -> None:  # never under a bar: a stage closes the one before
        print(f"[{self.label}] {line}" if self.label else line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def say_how_to_resume(job: Job) -> None:
    """The line after an interruption: how far the run got and the command that goes on."""
    status = job.status()
    if status.get("method", "ddpg") != "ddpg":
        print(f"interrupted; run it again with: rlprune resume {job.path}", file=sys.stderr)
        return
    done = status.get("episodes_done", 0)
    latest = CheckpointStore(job.checkpoints).latest()
    saved = int(latest.name.removeprefix("ep")) if latest is not None else None
    if saved == done:
        where = ""
    elif saved is None:
        where = " (no checkpoint yet: resuming starts it over)"
    else:
        where = f" (the last checkpoint is episode {saved})"
    print(f"interrupted after episode {done}{where}; continue with: rlprune resume {job.path}",
          file=sys.stderr)


def print_result(policy: dict, run: Path, method: str) -> None:
    from rlprune.service.jobs.report import result_rows

    print(f"\nrun {run}" if method == "ddpg" else f"run {run} ({method})")
    deploy = run / "deployment.json"
    measured = read_json(deploy) if deploy.is_file() else None
    rows = result_rows(policy, measured)
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:
        print(f"  {key:<{width}}{value}")
    files = (f"  model {run / MODEL_FILE} (rlprune.load_model), policy {run / 'policy.json'}, "
             f"report {run / 'report.md'}")
    if method == "ddpg":
        files += f", TensorBoard: tensorboard --logdir {run / 'tb'}"
    print(files)


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2))


def say_stopping(signal_name: str) -> None:
    """What a terminal shows when ^C or SIGTERM asks a search to stop (`SignalStop.notify`)."""
    from rlprune.service.jobs.stop import stopping_message

    print("\n" + stopping_message(signal_name), file=sys.stderr)
