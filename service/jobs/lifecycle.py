"""One lifecycle for every job, whoever starts it (CLI, Python API, bench, service):

settings -> allocation (a DDPG search, or a baseline's rule) -> policy -> pruned, fine-tuned
model -> the run folder's files (config.json, status.json, policy.json, pruned.pt, report.md,
and for a search checkpoints/ and tb/). Without a run folder the same steps run in memory.

`JobRunner(config, dense, method)` checks everything it can before a folder exists (the
settings, the target's feasibility); `create()` makes the folder; `run()` does the work and
reports progress as `Event`s. A callback that returns False, or `should_stop`, stops a
search at the next episode boundary (resumable); nothing here prints or handles signals.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from rlprune.agent.config import CHANNEL_SEED_POLICIES, SEED_POLICIES, SearchConfig
from rlprune.agent.search import RANDOM_STREAM, DamagedCheckpoint, Search
from rlprune.agent.tpe import TpeSearch
from rlprune.agent.workers import ClusterLost
from rlprune.env.finalize import Finalized, prune_and_finetune
from rlprune.env.make import make_env
from rlprune.env.policy import entries
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.dense import Dense
from rlprune.models.errors import SettingError, UserError
from rlprune.models.train import resolve_device, save_program, save_weights
from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.files import save_policy, write_json
from rlprune.service.jobs.job_policy import job_policy
from rlprune.service.jobs.measure import deployment, in_search, proxy_speed
from rlprune.service.jobs.report import write_report
from rlprune.service.jobs.run_folder import DamagedRun, Job, new_job_id
from rlprune.service.jobs.selection_stage import select

# what a job may run, per granularity: the search, random search (the same episodes and seed
# allocations, no learning: the ablation any RL search must beat) and the baselines
METHODS = {"weight": ("ddpg", "random", "tpe", *SEED_POLICIES, "3sigma-only"),
           "channel": ("ddpg", "random", "tpe", *CHANNEL_SEED_POLICIES)}
SEARCHES = ("ddpg", "random", "tpe")
# every finished run has these (a search adds rewards.png, tb/ and its checkpoints)
EVENTS = "events.jsonl"
RUN_FILES = ("config.json", "status.json", "policy.json", "pruned.pt", "report.md",
             "sparsity.png", "deployment.json", EVENTS)


@dataclass(frozen=True)
class Event:
    """Progress of a job. `kind`: `state` (the job's state changed), `episode` (a search
    episode ended), `finetune_epoch` or `pretrain_epoch`; the other fields that apply are set."""

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

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


Callback = Callable[[Event], "bool | None"]


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


def settled(config: SearchConfig, method: str) -> SearchConfig:
    """The settings a `method` job runs with (and records): `config` validated, its device
    resolved; a random search warms up all the way (it never learns)."""
    if method != "ddpg" and config.agent != "ddpg":
        raise SettingError("agent", f"{config.agent} is the search's algorithm; method "
                           f"{method} has no agent (leave agent at ddpg)")
    if method == "tpe" and config.workers != 1:
        raise SettingError("workers", "must be 1 for tpe (it plays one trial at a time)")
    config = dataclasses.replace(config, device=resolve_device(config.device))
    if method == "random":
        config.warmup = config.episodes
    config.validate()
    return config


class JobRunner:
    """One job: `method` (`ddpg` or a baseline) on `dense` with `config`.

    :param config: every setting; validated here (and `device` resolved)
    :param dense: the trained model and its data (never modified)
    :param method: `ddpg` (the search), `uniform`, `global`, `lamp`, `erk`, or `3sigma-only`
    :param callback: gets every `Event`; returning False asks a search to stop
    :param should_stop: polled between episodes; True stops a search there
    """

    def __init__(self, config: SearchConfig, dense: Dense, method: str = "ddpg", *,
                 callback: Callback | None = None,
                 should_stop: Callable[[], bool] | None = None):
        methods = METHODS[config.granularity]
        if method not in methods:
            raise UserError(f"unknown method {method!r} for granularity {config.granularity}; "
                            f"choose from {', '.join(methods)}")
        config = settled(config, method)
        self.config, self.dense, self.method = config, dense, method
        self.callback, self.should_stop = callback, should_stop
        self.job: Job | None = None
        self.searching = False  # True while search episodes run (a stop waits for a boundary)
        self._stop = False
        self.search: Search | None = None
        self.env: PruningEnv | None = None
        self.proxy_speed: dict | None = None
        self._evals_s: list[float] = []  # this run's episodes' own evaluation times
        if method == "tpe":  # Optuna's TPE over the same env: the black-box comparison
            self.search = TpeSearch(config, dense, on_episode=self._on_episode,
                                    should_stop=self.stop_requested)
        elif method in SEARCHES:
            self.search = Search(config, dense, on_episode=self._on_episode,
                                 should_stop=self.stop_requested,
                                 stream=RANDOM_STREAM if method == "random" else 0)
        if self.search is not None:
            self.env = self.search.env
        elif method != "3sigma-only":  # the search's env: its layers, FC masks and budget
            self.env = make_env(dense.model, dense.data.val, dense.input_shape,
                                config.env_config(), calibration=dense.data.train,
                                device=config.device)

    # -- control -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop a search at its next episode boundary (safe from a signal handler)."""
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop or bool(self.should_stop and self.should_stop())

    def _emit(self, event: Event) -> None:
        if self.job is not None and event.kind in ("state", "episode"):
            # the run's event log (the service streams it): one line per episode and state
            with open(self.job.path / EVENTS, "a") as fh:
                fh.write(json.dumps({"time": time.time(), **event.to_json()}) + "\n")
        if self.callback is not None and self.callback(event) is False:
            self._stop = True

    # -- the run folder ----------------------------------------------------------------
    def create(self, run_dir: str | Path | None = None) -> Job:
        """A new run folder (`run_dir`, or a fresh one under runs/) holding config.json, locked
        by this process and `running` from the start."""
        c = self.config
        stem = c.model if self.method == "ddpg" else f"{c.model}-{self.method}"
        job = Job.create(run_dir, new_job_id(stem, c.dataset, c.target))
        job.write_config({**c.to_json(), "method": self.method})
        self.job = job
        self._write_status("running")
        return job

    def _write_status(self, state: str, **extra) -> None:
        if self.job is None:
            return
        fields = {"method": self.method, "target": self.config.target}
        if self.search is not None:
            s = self.search.state
            fields.update(episodes_done=s.episode, episodes=self.config.episodes,
                          best_reward=s.best["reward"] if s.best else None,
                          best_episode=s.best["episode"] if s.best else None)
        self.job.write_status(state, **fields, **extra)

    def _set_state(self, state: str, **extra) -> None:
        self._write_status(state, **extra)
        self._emit(Event("state", self._run_name(), state=state, method=self.method))

    def _run_name(self) -> str | None:
        return None if self.job is None else str(self.job.path)

    def _on_episode(self, record: dict) -> None:
        self._write_status("running")
        if record.get("eval_s") is not None:
            self._evals_s.append(record["eval_s"])
        keys = ("episode", "episodes", "reward", "best_reward", "best_episode",
                "proxy_accuracy", "proxy_loss", "sparsities")
        self._emit(Event("episode", self._run_name(), **{k: record[k] for k in keys}))

    # -- the work ----------------------------------------------------------------------
    def run(self, job: Job | None = None, resume_from: Path | None = None) -> Result:
        """Do the job; with `job`, in its run folder (a search checkpoints there and continues
        from `resume_from`). A KeyboardInterrupt leaves the run `interrupted` and propagates;
        any other failure leaves it `failed`."""
        self.job = job if job is not None else self.job
        try:
            return self._run(resume_from)
        except KeyboardInterrupt:
            self._set_state("interrupted")
            raise
        except BaseException:
            self._set_state("interrupted" if self.stop_requested() else "failed")
            raise

    def _run(self, resume_from: Path | None) -> Result:
        self._set_state("running")
        timings: dict[str, float] = {}
        if self.search is not None:
            self.proxy_speed = proxy_speed(self.env)
            start = time.perf_counter()
            self.searching = True
            try:
                self.search.run(checkpoints=self._store(), resume_from=resume_from,
                                tb_dir=None if self.job is None else self.job.tb)
            except ClusterLost as exc:  # resumable from the last checkpoint
                self._set_state("interrupted", reason=str(exc))
                return self._result("interrupted", None, None, timings, reason=str(exc))
            finally:
                self.searching = False
            timings["search"] = time.perf_counter() - start
            self.proxy_speed.update(in_search(timings["search"], self._evals_s))
            episodes = self.search.state.episode - self.search.episodes_at_start
            if episodes:
                timings["one episode (search ÷ episodes, updates included)"] = (
                    timings["search"] / episodes)
            if self.search.stopped or self.stop_requested():
                self._set_state("interrupted")
                return self._result("interrupted", None, None, timings)
        selection = None
        if self.search is not None and self.config.select_top_k:
            start = time.perf_counter()
            selection = select(self.config, self.dense, self.env, self.method,
                               self.search.state.top, None if self.job is None else self.job.path)
            timings["selection"] = time.perf_counter() - start
        start = time.perf_counter()
        policy = self._policy(selection)
        done = self._finalize(policy)
        timings["prune + fine-tune"] = time.perf_counter() - start
        if self.search is None or selection:  # measured as the search's proxy would be
            policy["accuracy"]["proxy"] = done.proxy_accuracy
        policy["accuracy"].update(pruned=done.pruned_accuracy, finetuned=done.finetuned_accuracy)
        if self.job is not None:
            self._write_outputs(policy, done.model, timings)
        self._set_state("finished", achieved_sparsity=policy["achieved"]["sparsity"])
        return self._result("finished", policy, done.model, timings)

    def _store(self) -> CheckpointStore | None:
        return None if self.job is None else CheckpointStore(self.job.checkpoints)

    def _result(self, state: str, policy: dict | None, model: nn.Module | None,
                timings: dict[str, float], reason: str | None = None) -> Result:
        search = self.search
        return Result(state, policy, model, search.state.history() if search else [],
                      None if self.job is None else self.job.path, timings,
                      search.state.episode if search else 0,
                      search.saved_at if search and self.job else None, self.proxy_speed,
                      reason)

    def _policy(self, selection=None) -> dict:
        """The allocation as a policy: the selection's pick (recorded with every candidate's
        scores), the search's best episode, or the baseline's rule."""
        if selection is None:
            return job_policy(self.method, self.config, self.dense, self.env, self.search)
        chosen, pool = selection
        policy = job_policy(self.method, self.config, self.dense, self.env, self.search,
                            chosen={"sparsities": chosen.sparsities, "reward": chosen.reward,
                                    "episode": chosen.episode, "proxy_accuracy": None})
        policy["search"]["selection"] = {"chosen": chosen.name,
                                         "candidates": [c.to_json() for c in pool]}
        return policy

    def _finalize(self, policy: dict) -> Finalized:
        c = self.config
        epochs = c.finetune_epochs

        def on_epoch(epoch: int, loss: float) -> None:
            self._emit(Event("finetune_epoch", self._run_name(), epoch=epoch + 1, epochs=epochs,
                             loss=loss))

        return prune_and_finetune(self.dense.model, policy, self.dense.data, epochs=epochs,
                                  lr=c.finetune_lr, seed=c.seed,
                                  bn_batches=c.bn_recalibration_batches,
                                  bn_batch_size=c.bn_batch_size, device=c.device,
                                  on_epoch=on_epoch)

    def _write_outputs(self, policy: dict, model: nn.Module, timings: dict[str, float]) -> None:
        c, path, dense = self.config, self.job.path, self.dense
        meta = {"model": c.model, "dataset": c.dataset,
                "accuracy": {"test": policy["accuracy"]["finetuned"]},
                "policy": {e["name"]: e["sparsity"] for e in entries(policy)}}
        if c.granularity == "channel":  # the slim network, runnable with plain torch
            save_program(path / "pruned.pt", model, dense.input_shape, meta)
        else:
            save_weights(path / "pruned.pt", model, meta)
        measured = {**deployment(dense.model, model, dense.input_shape),
                    "pruned_file_mb": (path / "pruned.pt").stat().st_size / 1e6}
        write_json(path / "deployment.json", measured)  # measured here: not part of the policy
        save_policy(policy, path / "policy.json")
        rewards = self.search.state.rewards if self.search is not None else []
        write_report(path, policy, rewards, c.warmup if self.search is not None else 0, timings,
                     measured, self.proxy_speed)


@dataclass
class Resume:
    """What `open_resume` found: the runner, the run (locked by this process), the
    checkpoint to continue from (None: the search starts over; a baseline simply runs again)
    and the newer checkpoints that did not load (`folder name (reason)`)."""

    runner: JobRunner
    job: Job
    checkpoint: Path | None
    skipped: list[str]


def open_resume(run: str | Path, load: Callable[[SearchConfig], Dense], *,
                episodes: int | None = None, callback: Callback | None = None,
                should_stop: Callable[[], bool] | None = None) -> Resume:
    """Everything a resume needs, checked before the run is touched (`episodes`: a new
    total). `load(config)` gives the dense model and data the run was made with. The newest
    checkpoint that loads whole is the one continued from; damaged ones are skipped (and
    kept) and named in `skipped`."""
    job = Job.open(run)
    status = job.status()
    if status["state"] == "finished":
        raise UserError(f"run {job.path} is finished; start a new search instead")
    if job.is_running():
        raise UserError(f"run {job.path} is already running")
    saved = job.config()
    method = saved.get("method", "ddpg")  # runs made before `method` was recorded: searches
    if method not in {m for methods in METHODS.values() for m in methods}:
        raise DamagedRun(f"{job.path / 'config.json'}: unknown method {method!r}")
    try:
        config = SearchConfig.from_json(saved)
    except UserError as exc:
        raise DamagedRun(f"{job.path / 'config.json'}: {exc}") from None
    if episodes is not None:
        done = status.get("episodes_done") or 0
        if method != "ddpg":
            raise UserError(f"run {job.path} is a baseline ({method}); it has no episodes")
        if episodes < max(1, done):
            raise UserError(f"--episodes {episodes} is fewer than the {done} episodes run "
                            f"{job.path} has done; give at least {max(1, done)}")
        config.episodes = episodes
    runner = JobRunner(config, load(config), method, callback=callback,
                       should_stop=should_stop)
    found, skipped = None, []
    if runner.search is not None:
        for folder in CheckpointStore(job.checkpoints).candidates():
            try:
                runner.search.load(folder)  # the whole checkpoint, before the run is touched
            except DamagedCheckpoint as exc:
                skipped.append(f"{folder.name} ({exc.reason})")
                continue
            found = folder
            break
        if found is None and skipped:
            raise UserError(f"no checkpoint of run {job.path} loads ({'; '.join(skipped)}); "
                            f"to start its search over, move {job.checkpoints} away")
    job.acquire()
    runner.job = job
    if episodes is not None:
        job.write_config({**config.to_json(), "method": method})
    return Resume(runner, job, found, skipped)
