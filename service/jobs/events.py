"""What a job reports while it runs (`Event`, to a `Callback`) and what it gives back (`Result`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for the annotation: the CLI's client commands never load it
    from torch import nn


@dataclass(frozen=True)
class Event:
    """Progress of a job. `kind`: `state` (the job's state changed), `stage` (a stage began:
    `stage` is one of `STAGES`, `steps` how many steps it has, `message` what it does),
    `episode` (a search episode ended), `selection_step` (a selection candidate scored),
    `finetune_epoch` or `pretrain_epoch`; the other fields that apply are set. `accuracy`
    carries the test accuracies known so far (dense, pruned, fine-tuned)."""

    kind: str
    run: str | None = None
    state: str | None = None
    method: str | None = None
    episode: int | None = None
    episodes: int | None = None
    reward: float | None = None
    best_reward: float | None = None
    best_episode: int | None = None
    proxy_accuracy: float | None = None
    proxy_loss: float | None = None
    sparsities: dict | None = None  # an episode's per-layer (or per-group) sparsities
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    stage: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None
    accuracy: dict | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


Callback = Callable[[Event], "bool | None"]

# a job's stages, in order, with what each does (a baseline has no search or selection; a
# resume no pretrain); the message is formatted with the job's settings and the stage's steps
STAGES = {
    "pretrain": "no cached dense {model} for {dataset}: pre-training it once ({steps} epochs)",
    "search": "searching: {steps} episodes, each an allocation scored on the proxy split",
    "selection": "selecting among the search's best {select_top_k} allocation(s) and the "
                 "seed policies, after short fine-tunes",
    "finetune": "pruning to the policy, fine-tuning {steps} epoch(s) with the masks held",
    "export": "measuring size and latency, writing the model file and the report",
}
EVENTS = "events.jsonl"
"""The run folder's event log: one JSON line per event (the service streams it)."""


STEP_LINES = 10  # a stage's plain progress lines at most: one per tenth of its steps

# each step event's (number done, total, unit) and what a line about it adds
_STEPS: dict[str, tuple[str, str, str]] = {
    "episode": ("episode", "episodes", "episode"),
    "selection_step": ("step", "steps", "candidate"),
    "finetune_epoch": ("epoch", "epochs", "epoch"),
    "pretrain_epoch": ("epoch", "epochs", "epoch"),
}
_STAGE_OF = {"episode": "search", "selection_step": "selection", "finetune_epoch": "finetune",
             "pretrain_epoch": "pretrain"}
_ACCURACY = {"dense": "dense", "pruned": "pruned", "finetuned": "fine-tuned"}


def step_of(event: Event) -> tuple[int, int, str] | None:
    """A step event's (steps done, steps in its stage, unit); None for other events."""
    if event.kind not in _STEPS:
        return None
    done, total, unit = _STEPS[event.kind]
    return getattr(event, done) or 0, getattr(event, total) or 0, unit


def stage_of(event: Event) -> str | None:
    """The stage an event belongs to (a stage event's own, a step event's)."""
    return event.stage if event.kind == "stage" else _STAGE_OF.get(event.kind)


def line_due(done: int, total: int, lines: int = STEP_LINES) -> bool:
    """Whether step `done` of `total` crosses a `1/lines` mark (the last one always does), so
    that a stage writes at most `lines` plain progress lines, each step of a short one."""
    if total <= 0 or done >= total:
        return True
    return done * lines // total > (done - 1) * lines // total


def plain_line(event: Event) -> str | None:
    """The line a log (not a terminal) gets for `event`: a stage with its message and the
    accuracies known, a step with its figures, a finished or stopped job; None for the rest
    (a step between two marks of `line_due`, a job that starts running)."""
    if event.kind == "stage":
        known = ", ".join(f"{_ACCURACY.get(k, k)} {100 * v:.2f}%"
                          for k, v in (event.accuracy or {}).items())
        return f"{event.stage}: {event.message}" + (f" (test accuracy: {known})" if known
                                                     else "")
    if event.kind == "state":
        return None if event.state == "running" else f"job {event.state}"
    step = step_of(event)
    if step is None or not line_due(step[0], step[1]):
        return None
    done, total, unit = step
    return f"{stage_of(event)}: {unit} {done}/{total}" + "".join(
        f", {name} {value:.4f}" for name, value in step_figures(event).items())


def is_progress_line(line: str) -> bool:
    """Whether a log line is one of `plain_line`'s (not a message of the job's own)."""
    head, sep, _ = line.partition(": ")
    return bool(sep) and head in STAGES or line.startswith(("job finished", "job interrupted",
                                                            "job failed"))


def step_figures(event: Event) -> dict[str, float]:
    """A step's figures: an episode's reward and the best so far, an epoch's loss."""
    figures = {"reward": event.reward, "best": event.best_reward, "loss": event.loss}
    return {name: value for name, value in figures.items() if value is not None}


def append_event(run: Path, event: Event) -> None:
    """One line of the run's event log."""
    with open(Path(run) / EVENTS, "a") as fh:
        fh.write(json.dumps({"time": time.time(), **event.to_json()}) + "\n")


@dataclass
class Result:
    """What a job produced. `state` is `finished`, or `interrupted` when a stop ended a
    search early (then `policy` and `model` are None and the run can be resumed)."""

    state: str
    policy: dict | None
    model: nn.Module | None
    history: list[dict] = field(default_factory=list)
    """Per episode of a search: episode, reward, proxy_accuracy, proxy_loss."""
    run_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    episodes_done: int = 0
    checkpoint_episode: int | None = None
    """The episode of the search's last checkpoint (where a resume continues)."""
    proxy_speed: dict | None = None
    """A search's proxy evaluation timed before it starts (`measure.proxy_speed`), and its
    own evaluations against its wall time once it has run (`measure.in_search`)."""
    reason: str | None = None
    """Why an `interrupted` search stopped, when it was not asked to (a lost Ray node)."""
