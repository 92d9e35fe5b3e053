"""Resuming a run: everything checked before the run is touched, the newest checkpoint that
loads whole, then the same lifecycle as a new job (`resume_job`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.agent.search_state import DamagedCheckpoint
from rlprune.models.dense import Dense
from rlprune.models.errors import SettingError, UserError
from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.events import Callback, Result
from rlprune.service.jobs.lifecycle import JobRunner, Opened
from rlprune.service.jobs.run_folder import DamagedRun, Job


def open_resume(run: str | Path, load: Callable[[SearchConfig], Dense], *,
                episodes: int | None = None, callback: Callback | None = None) -> Opened:
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
    saved = {"round_to": 1, **job.config()}  # runs made before `round_to`: no rounding
    method = saved.get("method", "ddpg")  # runs made before `method` was recorded: searches
    if method not in METHODS or METHODS[method].kind == "variant":
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
            raise SettingError("episodes", f"{episodes} is fewer than the {done} episodes run "
                               f"{job.path} has done; give at least {max(1, done)}")
        config.episodes = episodes
    runner = JobRunner(config, load(config), method, callback=callback)
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
    return Opened(runner, job, found, skipped)


def resume_job(run: str | Path, load: Callable[[SearchConfig], Dense], *,
               episodes: int | None = None, callback: Callback | None = None,
               on_start: Callable[[Opened], None] | None = None) -> Result:
    """Continue run `run` (see `open_resume`) and run it to its end, as `run_job` runs a new
    one; `on_start` sees the opened run (its checkpoint, the skipped ones) before the work."""
    return open_resume(run, load, episodes=episodes, callback=callback).run(on_start)
