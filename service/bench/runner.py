"""`rlprune bench`: every method at every target and seed, one fine-tune budget, one table.

Methods: `ddpg` (search + FC rule), `ddpg-only` (the agent prunes every layer, no FC rule),
`td3` (the search with SB3's TD3 as its agent),
`3sigma-only` (the k-sigma rule on every layer, k=3; its sparsity is whatever the rule gives),
and the baselines `uniform`, `global`, `lamp`, `erk` (with the same FC rule as `ddpg`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.models.dense import Dense
from rlprune.models.errors import SettingError
from rlprune.service.bench.plan import (  # noqa: F401 (bench_methods, default_methods: re-exported)
    BenchConfig,
    bench_methods,
    default_methods,
)
from rlprune.service.bench.report import speed_summary, write_bench
from rlprune.service.jobs.events import Callback, Event
from rlprune.service.jobs.files import read_json
from rlprune.service.jobs.latency_lut import with_latency_table
from rlprune.service.jobs.lifecycle import JobRunner, Opened, run_job, settled
from rlprune.service.jobs.resume import open_resume
from rlprune.service.jobs.run_folder import DamagedRun, Job


class CellProgress(Protocol):
    """A cell's callback from `progress(label)`: called with each Event, closed when the cell
    ends (the CLI's `Progress` bars)."""

    def __call__(self, event: Event) -> bool | None: ...

    def close(self) -> None: ...


def run_one(method: str, config: SearchConfig, dense: Dense, run_dir: Path,
            speed: list[dict], progress: Callable[[str], CellProgress] | None = None,
            on_runner: Callable[[JobRunner], None] | None = None) -> dict:
    """One bench cell in its own run folder, through the same lifecycle as `rlprune search`
    and `rlprune baseline`; its policy. `SEARCH_VARIANTS` are the search with other settings;
    a baseline has no agent (its cells run with the default one recorded). A search stopped
    early stops the whole bench (KeyboardInterrupt)."""
    m = METHODS[method]
    kind, changes = (m.variant_of, dict(m.settings)) if m.variant_of else (method, {})
    if not METHODS[kind].uses_agent:
        changes = {**changes, "agent": "ddpg"}
    config = dataclasses.replace(config, **changes)
    callback = progress(run_dir.name) if progress else None

    def on_start(opened: Opened) -> None:
        if on_runner is not None:
            on_runner(opened.runner)

    try:
        if run_dir.exists():  # a cell of the interrupted bench this one resumes
            found = _earlier_cell(run_dir, config, kind, dense, callback)
            if isinstance(found, dict):
                return found
            result = found.run(on_start)
        else:
            result = run_job(config, dense, kind, run_dir=run_dir, callback=callback,
                             on_start=on_start)
    finally:
        if callback is not None:
            callback.close()
    if result.state == "interrupted":
        raise KeyboardInterrupt
    if result.proxy_speed is not None:
        speed.append({"episodes": result.episodes_done, "search_s": result.timings["search"],
                      **result.proxy_speed})
    return result.policy


def _earlier_cell(run_dir: Path, config: SearchConfig, method: str, dense: Dense,
                  callback: Callback | None):
    """A resumed bench's cell folder: its policy if it finished, else what `open_resume`
    needs to continue it. A folder made with other settings is refused, not overwritten."""
    job = Job.open(run_dir)
    saved = job.config()
    wanted = {**json.loads(json.dumps(settled(config, method).to_json())), "method": method}
    defaults = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    differ = sorted(k for k in saved.keys() | wanted.keys()  # a setting newer than the cell
                    if saved.get(k, defaults.get(k)) != wanted.get(k))  # ran at its default
    if differ:
        raise SettingError("out", f"{run_dir} was made with other settings than this bench's "
                           f"({', '.join(differ)}); resume with the bench's own settings, or "
                           "choose a new `out`", lead=False)
    if job.status().get("state") == "finished":
        try:
            return read_json(job.path / "policy.json")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DamagedRun(f"{job.path / 'policy.json'}: {exc}") from None
    return open_resume(run_dir, lambda _: dense, callback=callback)


def run_bench(dense: Dense, base: SearchConfig, *, targets: list[float], methods: list[str],
              seeds: int, out: Path, log: Callable[[str], None] = lambda line: None,
              first_seed: int = 0, progress: Callable[[str], CellProgress] | None = None,
              on_runner: Callable[[JobRunner], None] | None = None,
              resume: bool = False) -> dict:
    """Run seeds `first_seed` … `first_seed + seeds - 1` of every method at every target, each
    in `out/runs/<method>-<target>-seed<seed>/`.

    `log` gets one line per finished run, counted ("[3/25] ..."); `progress(label)` makes each
    cell's event callback (with a `close()`); `on_runner` sees each cell's runner before it
    runs (the command line points its signal handling at it).

    A later bench with `first_seed` past an earlier one's seeds extends it
    (`rlprune bench --merge` joins the two). With `resume`, `out` may hold an interrupted
    bench of the same settings: its finished cells are kept (not re-run, no speed record),
    an unfinished one continues from its last checkpoint.
    """
    if not resume and (out / "runs").exists():
        raise SettingError("out", f"{out} already holds a bench's runs; resume it (`resume`) "
                           "or choose a new `out`", others=("resume",), lead=False)
    BenchConfig(targets=tuple(targets), methods=tuple(methods), seeds=seeds,
                first_seed=first_seed, out=str(out), resume=resume).validate(base)
    base = with_latency_table(base, dense)  # one table for every cell: one budget compared
    results: list[dict] = []
    speed: list[dict] = []
    try:
        _run_all(dense, base, targets, methods, range(first_seed, first_seed + seeds), out, log,
                 results, speed, progress, on_runner)
    except KeyboardInterrupt:
        if results:
            write_bench(_report(base, dense, results, speed, interrupted=True), out)
            log(f"interrupted: the {len(results)} finished rows are in {out / 'bench.json'}; "
                f"the same command with --resume continues it")
        raise
    report = _report(base, dense, results, speed)
    write_bench(report, out)
    return report


def bench_cells(base: SearchConfig, targets: list[float], methods: list[str], seeds: range,
                out: Path) -> list[tuple[str, SearchConfig, Path]]:
    """(method, config, run folder) of every cell, in the bench's order: target, method, seed.
    A cell runs where it is put (a Ray task asks for the GPUs): its search never reaches for
    Ray itself. Cells skip the int8 size (a quantization each; the bench compares accuracy)."""
    gpu: dict[str, Any] = ({"device": "cuda", "gpus_per_worker": 0.0} if base.gpus_per_worker
                           else {})
    return [(method, dataclasses.replace(base, target=target, seed=seed, ray_address=None,
                                         int8_size=False, **gpu),
             out / "runs" / f"{method}-{target:g}-seed{seed}")
            for target in targets for method in methods for seed in seeds]


def run_cell(method: str, config: SearchConfig, dense: Dense, run_dir: Path,
             progress: Callable[[str], CellProgress] | None = None,
             on_runner: Callable[[JobRunner], None] | None = None
             ) -> tuple[dict, dict | None]:
    """One cell: its result row and its speed record (None for a baseline or a kept cell)."""
    speed: list[dict] = []
    start = time.perf_counter()
    policy = run_one(method, config, dense, run_dir, speed, progress, on_runner)
    row = {"method": method, "target": config.target, "seed": config.seed,
           "test_accuracy": policy["accuracy"]["finetuned"],
           "pruned_accuracy": policy["accuracy"]["pruned"],
           "proxy_accuracy": policy["accuracy"]["proxy"],
           "sparsity": policy["achieved"]["sparsity"],
           "seconds": round(time.perf_counter() - start, 2)}
    search = policy.get("search") or {}
    if search.get("action_mapping"):
        row["action_mapping"] = search["action_mapping"]
    if "episodes" in search:  # where the pick came from: a warm-up episode, a later one, a seed
        row["best_reward_episode"] = search.get("best_episode")
        row["chosen"] = ((search.get("selection") or {}).get("chosen")
                         or f"episode {search.get('best_episode')}")
    return row, (speed[0] if speed else None)


def _run_all(dense: Dense, base: SearchConfig, targets: list[float], methods: list[str],
             seeds: range, out: Path, log: Callable[[str], None], results: list[dict],
             speed: list[dict], progress, on_runner) -> None:
    cells = bench_cells(base, targets, methods, seeds, out)

    def done(row: dict, record: dict | None) -> None:
        results.append(row)
        if record is not None:
            speed.append(record)
        log(f"[{len(results)}/{len(cells)}] {row['method']:<12} target {row['target']:g} seed "
            f"{row['seed']}: test {100 * row['test_accuracy']:.2f}% at sparsity "
            f"{row['sparsity']:.4f} ({row['seconds']:.0f}s)")

    if base.ray_address:
        from rlprune.service.bench.ray_cells import run_cells_on_ray

        order = {(m, c.target, c.seed): i for i, (m, c, _) in enumerate(cells)}
        try:
            run_cells_on_ray(cells, dense, base, run_cell, done)
        finally:  # the bench's order, whichever cell finished first
            results.sort(key=lambda r: order[(r["method"], r["target"], r["seed"])])
        return
    for method, config, run_dir in cells:
        done(*run_cell(method, config, dense, run_dir, progress, on_runner))


def _report(base: SearchConfig, dense: Dense, results: list[dict], speed: list[dict],
            interrupted: bool = False) -> dict:
    report = {"model": base.model, "dataset": base.dataset, "dense_test_accuracy":
              dense.test_accuracy, "episodes": base.episodes, "warmup": base.warmup,
              "seed_policies": list(base.seed_policies_for()), "hidden": list(base.hidden),
              "action_mapping": base.action_mapping, "reward": base.reward, "fc_k": base.fc_k,
              "finetune_epochs": base.finetune_epochs, "results": results,
              "speed": speed_summary(speed)}
    if interrupted:
        report["interrupted"] = True
    return report
