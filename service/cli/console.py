"""What the command line shows while a job runs, and how it answers ^C and SIGTERM.

The library reports progress as `Event`s and stops when asked; here those become tqdm bars on
stderr, and signals become stop requests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.files import read_json
from rlprune.service.jobs.run_folder import MODEL_FILE, Job

if TYPE_CHECKING:
    from rlprune.service.jobs.lifecycle import Event


class Progress:
    """A job's bars on stderr: the search's episodes (named `label`) and the fine-tune's
    epochs. `quiet` shows none. Call it with each Event; `close()` when the job ends."""

    def __init__(self, label: str = "search", *, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.episodes: tqdm | None = None
        self.epochs: tqdm | None = None

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if event.kind == "episode":
            if self.episodes is None:
                assert event.episode is not None  # an episode event carries its number
                self.episodes = tqdm(total=event.episodes, initial=event.episode - 1,
                                     desc=self.label, unit="ep", file=sys.stderr,
                                     dynamic_ncols=True)
            self.episodes.set_postfix(best=f"{event.best_reward:.4f}",
                                      last=f"{event.reward:.4f}")
            self.episodes.update()
        elif event.kind == "finetune_epoch":
            if self.epochs is None:
                self.close()
                self.epochs = tqdm(total=event.epochs, desc="fine-tune", unit="epoch",
                                   file=sys.stderr, leave=False)
            self.epochs.set_postfix(loss=f"{event.loss:.4f}")
            self.epochs.update()
        elif event.kind == "state" and event.state != "running":
            self.close()

    def close(self) -> None:
        for bar in (self.episodes, self.epochs):
            if bar is not None:
                bar.close()
        self.episodes = self.epochs = None


class PretrainProgress:
    """An epoch callback that says why, and opens a bar, the first time pre-training reports;
    `close()` when loading ends, however it ends."""

    def __init__(self, model: str, dataset: str):
        self.model, self.dataset = model, dataset
        self.bar: tqdm | None = None

    def __call__(self, epoch: int, loss: float) -> None:
        if self.bar is None:
            from rlprune.models.pretrain import default_epochs

            print(f"no cached dense {self.model} for {self.dataset}: pre-training it once",
                  file=sys.stderr)
            self.bar = tqdm(desc="pretrain", unit="epoch", total=default_epochs(self.model),
                            file=sys.stderr, leave=False)
        self.bar.set_postfix(loss=f"{loss:.4f}")
        self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
