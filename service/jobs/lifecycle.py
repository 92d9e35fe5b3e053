"""One lifecycle for every job, whoever starts it (CLI, Python API, bench, service):
settings -> allocation (a DDPG search, or a baseline's rule) -> policy -> pruned, fine-tuned
model -> the run folder's files (`RUN_FILES`; a search adds checkpoints/ and tb/), or the same
in memory. `run_job(config, dense, method)` is the whole sequence: `JobRunner` checks all it
can before a folder exists; `create()` makes the folder and locks it; `run()` does the work,
reporting stages and progress as `Event`s. A stop is asked for one way: `request_stop()` (a
signal handler calls it), or a callback that returns False; a search stops at the next
episode boundary (resumable). Nothing here prints or handles signals. Resuming is
`rlprune.service.jobs.resume`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import METHODS, method_named, methods_for
from rlprune.agent.search import Search
from rlprune.agent.tpe import TpeSearch
from rlprune.agent.workers import ClusterLost
from rlprune.env.finalize import Finalized, prune_and_finetune
from rlprune.env.make import make_env
from rlprune.env.policy import entries
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.dense import Dense
from rlprune.models.errors import SettingError
from rlprune.models.train import resolve_device
from rlprune.service.jobs.artifacts import artifact_summary
from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.events import EVENTS, STAGES, Callback, Event, Result, append_event
from rlprune.service.jobs.files import save_policy, write_json
from rlprune.service.jobs.job_policy import job_policy
from rlprune.service.jobs.latency_lut import estimate_check, with_latency_table
from rlprune.service.jobs.measure import deployment, in_search, proxy_speed
from rlprune.service.jobs.report import write_report
from rlprune.service.jobs.run_folder import MODEL_FILE, Job, new_job_id
from rlprune.service.jobs.run_model import write_run_model
from rlprune.service.jobs.selection_stage import select

# every finished run has these (a search adds rewards.png, tb/ and its checkpoints)
RUN_FILES = ("config.json", "status.json", "policy.json", MODEL_FILE, "report.md",
             "sparsity.png", "deployment.json", EVENTS)


def job_methods(granularity: str, *, variants: bool = False) -> tuple[str, ...]:
    """What a job of `granularity` may run: the registry's searches (registered on import,
    above) and rules; `variants` adds the searches' variants (a bench runs those)."""
    return methods_for(granularity, variants=variants)


def settled(config: SearchConfig, method: str) -> SearchConfig:
    """The settings a `method` job runs with (and records): `config` validated, its device
    resolved (the one resolution of the job); a search that never learns warms up all the
    way."""
    m = method_named(method, config.granularity)
    if not m.uses_agent and config.agent != "ddpg":
        raise SettingError("agent", f"{config.agent} is the search's algorithm; method "
                           f"{method} has no agent (leave agent at ddpg)")
    if m.one_worker and config.workers != 1:
        raise SettingError("workers", f"must be 1 for {method} (it plays one trial at a time)")
    config = dataclasses.replace(config, device=resolve_device(config.device))
    if m.search is not None and not m.learns:
        config.warmup = config.episodes
    config.validate()
    return config


class JobRunner:
    """One job: `method` (`ddpg` or a baseline) on `dense` with `config`.

    :param config: every setting; validated here (and `device` resolved)
    :param dense: the trained model and its data (never modified)
    :param method: a registered method (`rlprune.agent.methods`): `ddpg` (the search),
        `random`, `tpe`, a baseline (`uniform`, `lamp`, ...) or `3sigma-only`
    :param callback: gets every `Event`; returning False asks a search to stop
    """

    def __init__(self, config: SearchConfig, dense: Dense, method: str = "ddpg", *,
                 callback: Callback | None = None):
        config = with_latency_table(settled(config, method), dense)
        self.config, self.dense, self.method = config, dense, method
        self.callback = callback
        self.job: Job | None = None
        self.searching = False  # True while search episodes run (a stop waits for a boundary)
        self._stop = False
        self.search: Search | TpeSearch | None = None
        self.env: PruningEnv | None = None
        self.proxy_speed: dict | None = None
        self.stage: dict = {}  # the stage now: stage, step, steps (in status.json)
        self.accuracy: dict[str, float] = {}  # test accuracies known so far (in status.json)
        self._evals_s: list[float] = []  # this run's episodes' own evaluation times
        make_search = METHODS[method].search
        if make_search is not None:
            self.search = make_search(config, dense, on_episode=self._on_episode,
                                      should_stop=self.stop_requested)
            self.env = self.search.env
        elif METHODS[method].allocate is not None:  # the search's env: layers, FC masks, budget
            self.env = make_env(dense.model, dense.data.val, dense.input_shape,
                                config.env_config(), calibration=dense.data.train,
                                device=config.device)

    # -- control -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop a search at its next episode boundary (safe from a signal handler)."""
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def _emit(self, event: Event) -> None:
        if self.job is not None:  # the run's event log (the service streams it)
            append_event(self.job.path, event)
        if self.callback is not None and self.callback(event) is False:
            self._stop = True

    def _stage(self, stage: str, steps: int, **accuracy: float | None) -> None:
        """A stage begins (`events.STAGES`): status.json and the event log say which."""
        message = STAGES[stage].format(steps=steps, **self.config.to_json())
        self.stage = {"stage": stage, "step": 0, "steps": steps}
        self.accuracy.update({k: v for k, v in accuracy.items() if v is not None})
        self._write_status("running")
        self._emit(Event("stage", self._run_name(), stage=stage, steps=steps, message=message,
                         accuracy=dict(self.accuracy) or None))

    def _step(self, kind: str, done: int, **fields) -> None:
        """A step of the stage now (an epoch, a scored candidate) done."""
        self.stage["step"] = done
        self._write_status("running")
        self._emit(Event(kind, self._run_name(), **fields))

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
        fields = {"method": self.method, "target": self.config.target, **self.stage}
        if self.accuracy:
            fields["accuracy"] = self.accuracy
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
        self.stage["step"] = record["episode"]
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
        c, dense = self.config, self.dense
        if self.search is not None:
            self._stage("search", c.episodes, dense=dense.test_accuracy)
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

            def progress(done: int, total: int) -> None:
                if self.stage.get("stage") != "selection":
                    self._stage("selection", total)
                if done:
                    self._step("selection_step", done, step=done, steps=total)

            selection = select(c, dense, self.env, self.method, self.search.state.top,
                               None if self.job is None else self.job.path, progress=progress)
            timings["selection"] = time.perf_counter() - start
        start = time.perf_counter()
        policy = self._policy(selection)
        self._stage("finetune", c.finetune_epochs, dense=dense.test_accuracy)
        done = self._finalize(policy)
        timings["prune + fine-tune"] = time.perf_counter() - start
        if self.job is not None:
            self._stage("export", 1, dense=dense.test_accuracy, pruned=done.pruned_accuracy,
                        finetuned=done.finetuned_accuracy)
        if self.search is None or selection:  # measured as the search's proxy would be
            policy["accuracy"]["proxy"] = done.proxy_accuracy
        policy["accuracy"].update(pruned=done.pruned_accuracy, finetuned=done.finetuned_accuracy)
        if self.job is not None:
            self._write_outputs(policy, done.model, timings)
        self.stage = {}
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
            self._step("finetune_epoch", epoch + 1, epoch=epoch + 1, epochs=epochs, loss=loss)

        return prune_and_finetune(self.dense.model, policy, self.dense.data, epochs=epochs,
                                  lr=c.finetune_lr, seed=c.seed,
                                  bn_batches=c.bn_recalibration_batches,
                                  bn_batch_size=c.bn_batch_size, device=c.device,
                                  on_epoch=on_epoch)

    def _write_outputs(self, policy: dict, model: nn.Module, timings: dict[str, float]) -> None:
        assert self.job is not None  # outputs are written to the job's run folder
        c, path, dense = self.config, self.job.path, self.dense
        meta = {"model": c.model, "dataset": c.dataset,
                "accuracy": {"test": policy["accuracy"]["finetuned"]},
                "policy": {e["name"]: e["sparsity"] for e in entries(policy)}}
        written = write_run_model(path, model, meta, config=c, data=dense.data, policy=policy)
        measured = {**deployment(dense.model, model, dense.input_shape),
                    **artifact_summary(model, c, dense.data, policy, written)}
        if c.latency_table is not None and policy.get("budget") == "latency":
            measured["latency_budget"] = estimate_check(dense.model, model, dense.input_shape,
                                                        c.latency_table, policy)
        write_json(path / "deployment.json", measured)  # measured here: not part of the policy
        save_policy(policy, path / "policy.json")
        rewards = self.search.state.rewards if self.search is not None else []
        write_report(path, policy, rewards, c.warmup if self.search is not None else 0, timings,
                     measured, self.proxy_speed)


@dataclass
class Opened:
    """A job with its run folder made (or reopened) and locked by this process, about to run:
    the runner, the run (None in memory), the checkpoint a resume continues from (None: a
    search starts over; a baseline simply runs again) and, for a resume, the newer checkpoints
    that did not load (`folder name (reason)`)."""

    runner: JobRunner
    job: Job | None
    checkpoint: Path | None = None
    skipped: list[str] = field(default_factory=list)

    def run(self, on_start: Callable[[Opened], None] | None = None) -> Result:
        """Run the job, holding its run folder's lock; `on_start(self)` first (the command
        line points its signal handling at the runner and says what runs where)."""
        if on_start is not None:
            on_start(self)
        if self.job is None:
            return self.runner.run()
        with self.job:
            return self.runner.run(self.job, self.checkpoint)


def run_job(config: SearchConfig, dense: Dense, method: str = "ddpg", *,
            run_dir: str | Path | None = None, in_memory: bool = False,
            callback: Callback | None = None,
            on_start: Callable[[Opened], None] | None = None) -> Result:
    """The job sequence, whoever asks (CLI, Python API, bench, service worker): build and
    check, make the run folder (`run_dir`, or a new one under runs/; none `in_memory`), lock
    it, run.

    :param config: every setting (checked, and the device resolved, before a folder exists)
    :param dense: the trained model and its data (never modified)
    :param method: a registered method (`rlprune.agent.methods`)
    :param run_dir: the run folder to make (new or empty), or None for a new one under runs/
    :param in_memory: run without a run folder (nothing is written; not resumable)
    :param callback: gets every `Event`; returning False stops a search (resumable)
    :param on_start: sees the job once its folder is made, before the work starts
    """
    runner = JobRunner(config, dense, method, callback=callback)
    job = None if in_memory else runner.create(run_dir)
    return Opened(runner, job).run(on_start)
