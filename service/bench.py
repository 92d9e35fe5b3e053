"""`rlprune bench`: every method at every target and seed, one fine-tune budget, one table.

Methods: `ddpg` (search + FC rule), `ddpg-only` (the agent prunes every layer, no FC rule),
`3sigma-only` (the k-sigma rule on every layer, k=3; its sparsity is whatever the rule gives),
and the baselines `uniform`, `global`, `lamp`, `erk` (with the same FC rule as `ddpg`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlprune.agent.config import SearchConfig
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.service.files import read_json, write_json, write_text_atomic
from rlprune.service.jobs import DamagedRun, Job
from rlprune.service.lifecycle import Callback, JobRunner, open_resume, settled

# per granularity; `ddpg-only` is the search on every layer (no FC rule)
METHODS = {"weight": ("ddpg", "ddpg-only", "3sigma-only", "random", "uniform", "global",
                      "lamp", "erk"),
           "channel": ("ddpg", "random", "uniform", "global-l1", "global-taylor")}
DEFAULT_METHODS = {"weight": ("ddpg", "ddpg-only", "3sigma-only", "uniform", "global", "lamp",
                              "erk"),
                   "channel": METHODS["channel"]}


def proxy_eval_seconds(env: PruningEnv, repeats: int = 10) -> float:
    """Time of one reward computation as the env does it (BatchNorm recalibration + val).

    The env's generator is put back afterwards, so timing changes nothing in the search."""
    saved = env.np_random.bit_generator.state
    env.proxy_accuracy()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        env.proxy_accuracy()
    seconds = (time.perf_counter() - start) / repeats
    env.np_random.bit_generator.state = saved
    return seconds


def run_one(method: str, config: SearchConfig, dense: Dense, run_dir: Path,
            speed: list[dict], progress: Callable[[str], Callback] | None = None,
            on_runner: Callable[[JobRunner], None] | None = None) -> dict:
    """One bench cell in its own run folder, through the same lifecycle as `rlprune search`
    and `rlprune baseline`; its policy. `ddpg-only` is the search on every layer (no FC rule).
    A search stopped early stops the whole bench (KeyboardInterrupt)."""
    if method == "ddpg-only":
        config = dataclasses.replace(config, fc_rule="agent")
    kind = "ddpg" if method == "ddpg-only" else method
    callback = progress(run_dir.name) if progress else None
    checkpoint = None
    if run_dir.exists():  # a cell of the interrupted bench this one resumes
        found = _earlier_cell(run_dir, config, kind, dense, callback)
        if isinstance(found, dict):
            return found
        runner, job, checkpoint = found.runner, found.job, found.checkpoint
    else:
        runner = JobRunner(config, dense, kind, callback=callback)
        job = None
    if on_runner is not None:
        on_runner(runner)
    eval_s = proxy_eval_seconds(runner.env) if runner.search is not None else None
    job = job if job is not None else runner.create(run_dir)
    with job:
        try:
            result = runner.run(job, checkpoint)
        finally:
            if callback is not None:
                callback.close()
    if result.state == "interrupted":
        raise KeyboardInterrupt
    if eval_s is not None:
        speed.append({"episodes": result.episodes_done, "search_s": result.timings["search"],
                      "proxy_eval_s": eval_s})
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
        raise UserError(f"{run_dir} was made with other settings than this bench's "
                        f"({', '.join(differ)}); resume with the bench's own settings, or "
                        "choose a new --out")
    if job.status().get("state") == "finished":
        try:
            return read_json(job.path / "policy.json")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DamagedRun(f"{job.path / 'policy.json'}: {exc}") from None
    return open_resume(run_dir, lambda _: dense, callback=callback)


def run_bench(dense: Dense, base: SearchConfig, *, targets: list[float], methods: list[str],
              seeds: int, out: Path, log: Callable[[str], None] = lambda line: None,
              first_seed: int = 0, progress: Callable[[str], Callback] | None = None,
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
        raise UserError(f"{out} already holds a bench's runs; resume it (--resume) or choose "
                        "a new --out")
    known = METHODS[base.granularity]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} for granularity "
                        f"{base.granularity}; choose from {', '.join(known)}")
    results, speed = [], []
    try:
        _run_all(dense, base, targets, methods, range(first_seed, first_seed + seeds), out, log,
                 results, speed, progress, on_runner)
    except KeyboardInterrupt:
        if results:
            _write(_report(base, dense, results, speed, interrupted=True), out)
            log(f"interrupted: the {len(results)} finished rows are in {out / 'bench.json'}; "
                f"the same command with --resume continues it")
        raise
    report = _report(base, dense, results, speed)
    _write(report, out)
    return report


def bench_cells(base: SearchConfig, targets: list[float], methods: list[str], seeds: range,
                out: Path) -> list[tuple[str, SearchConfig, Path]]:
    """(method, config, run folder) of every cell, in the bench's order: target, method, seed.
    A cell runs where it is put (a Ray task asks for the GPUs): its search never reaches for
    Ray itself."""
    gpu = {"device": "cuda", "gpus_per_worker": 0.0} if base.gpus_per_worker else {}
    return [(method, dataclasses.replace(base, target=target, seed=seed, ray_address=None,
                                         **gpu),
             out / "runs" / f"{method}-{target:g}-seed{seed}")
            for target in targets for method in methods for seed in seeds]


def run_cell(method: str, config: SearchConfig, dense: Dense, run_dir: Path,
             progress: Callable[[str], Callback] | None = None,
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
    if (policy.get("search") or {}).get("action_mapping"):
        row["action_mapping"] = policy["search"]["action_mapping"]
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
        from rlprune.service.ray_jobs import run_cells_on_ray

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
              "speed": _speed(speed)}
    if interrupted:
        report["interrupted"] = True
    return report


def merge_files(parts: list[str], out: Path) -> dict:
    """`rlprune bench --merge`: join bench.json files (see `merge_reports`) into `out`.

    A part written `PATH:OLD=NEW` contributes only its rows of method OLD, renamed NEW: two
    variants of the search side by side (bench.md then gives their seed-by-seed difference)."""
    reports = []
    for part in parts:
        name, colon, rename = part.partition(":")
        old, sep, new = rename.partition("=")
        if colon and not (sep and old and new):
            raise UserError(f"{part}: write a renamed part as PATH:OLD=NEW")
        try:
            report = _checked_report(json.loads(Path(name).read_text()))
            if rename:
                report = {**report, "results": [{**row, "method": new}
                                                for row in report["results"]
                                                if row["method"] == old]}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{name}: not a readable bench.json ({type(exc).__name__})") from None
        reports.append((part, report))
    merged = merge_reports(reports)
    _write(merged, out)
    return merged


ROW_KEYS = ("method", "target", "seed", "test_accuracy", "sparsity")


def _checked_report(report: object) -> dict:
    """A bench.json's content, if it has what merging reads (else ValueError)."""
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise ValueError("no results")
    if not isinstance(report.get("speed"), dict) or "overhead_ratio" not in report["speed"]:
        raise ValueError("no speed")
    if not all(isinstance(row, dict) and all(k in row for k in ROW_KEYS)
               for row in report["results"]):
        raise ValueError("a result row lacks " + "/".join(ROW_KEYS))
    return report


def _write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    write_text_atomic(out / "bench.md", bench_table(report))
    plot_bench(report, out / "bench.png")


def _speed(speed: list[dict]) -> dict:
    if not speed:
        return {"episode_s": None, "proxy_eval_s": None, "overhead_ratio": None}
    episodes = sum(s["episodes"] for s in speed)
    wall = sum(s["search_s"] for s in speed)
    evals = sum(s["episodes"] * s["proxy_eval_s"] for s in speed)
    return {"episode_s": wall / episodes, "proxy_eval_s": evals / episodes,
            "overhead_ratio": wall / evals}


def summarize(results: list[dict]) -> dict[tuple[str, float], dict]:
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in results:
        groups.setdefault((row["method"], row["target"]), []).append(row)
    return {key: {"mean": float(np.mean([r["test_accuracy"] for r in rows])),
                  "std": float(np.std([r["test_accuracy"] for r in rows])),
                  "sparsity": float(np.mean([r["sparsity"] for r in rows])), "n": len(rows)}
            for key, rows in groups.items()}


def bench_table(report: dict) -> str:
    summary = summarize(report["results"])
    targets = sorted({t for _, t in summary})
    methods = list(dict.fromkeys(m for m, _ in summary))
    lines = [f"# {report['model']} on {report['dataset']} (dense test accuracy "
             f"{100 * report['dense_test_accuracy']:.2f}%)", "",
             "Test accuracy after fine-tuning, mean ± std over seeds (achieved sparsity where "
             "it differs from the target).", "",
             "| method | " + " | ".join(f"{t:g}" for t in targets) + " |",
             "|---|" + "---:|" * len(targets)]
    for method in methods:
        cells = []
        for t in targets:
            s = summary.get((method, t))
            if s is None:
                cells.append("—")
                continue
            cell = f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
            if abs(s["sparsity"] - t) > 1e-3:
                cell += f" (at {s['sparsity']:.4f})"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += _paired_lines(report["results"])
    sp = report["speed"]
    if sp["overhead_ratio"] is not None:
        lines += ["", f"Search speed: {sp['episode_s']:.3f} s per episode, one proxy "
                  f"evaluation {sp['proxy_eval_s']:.3f} s, overhead ratio "
                  f"{sp['overhead_ratio']:.3f}."]
    return "\n".join(lines) + "\n"


def paired_differences(results: list[dict], method: str = "ddpg"
                       ) -> dict[tuple[str, float], dict]:
    """`method` minus each other method, seed by seed (a seed fixes the fine-tune's seed too).

    Per (other method, target) with at least two shared seeds: the mean difference, its
    standard error (sample std / sqrt(n)), and the seeds won, tied and lost. Rows that missed
    their target (3sigma-only decides its own sparsity) are not compared.
    """
    acc = {(r["method"], r["target"], r["seed"]): r["test_accuracy"] for r in results
           if abs(r["sparsity"] - r["target"]) <= 1e-3}
    diffs: dict[tuple[str, float], list[float]] = {}
    for (other, target, seed), theirs in acc.items():
        if other != method and (method, target, seed) in acc:
            diffs.setdefault((other, target), []).append(acc[(method, target, seed)] - theirs)
    return {key: _paired_summary(np.round(np.array(d), 6))  # k/n accuracies: ties stay exact
            for key, d in diffs.items() if len(d) >= 2}


def _paired_summary(d: np.ndarray) -> dict:
    """Mean difference, standard error, seeds won / tied / lost, and the verdict: `ahead` or
    `behind` when the two-sided 95% t interval of the mean excludes 0, else `level`."""
    from scipy.stats import t

    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(t.ppf(0.975, len(d) - 1)) * se
    verdict = "ahead" if mean - half > 0 else "behind" if mean + half < 0 else "level"
    return {"n": len(d), "mean": mean, "se": se, "verdict": verdict,
            "won": int((d > 0).sum()), "tied": int((d == 0).sum()), "lost": int((d < 0).sum())}


def _paired_lines(results: list[dict], method: str = "ddpg") -> list[str]:
    pairs = paired_differences(results, method)
    if not pairs:
        return []
    lines = ["", f"{method} minus each method on the same seeds (mean ± standard error, "
             "points; seeds won / tied / lost; verdict: ahead or behind where the 95% t "
             "interval of the mean difference excludes 0, else level):", "",
             "| method | target | difference | won / tied / lost | verdict |",
             "|---|---:|---:|---|---|"]
    for (other, target), p in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"| {other} | {target:g} | {100 * p['mean']:+.2f} ± {100 * p['se']:.2f} "
                     f"| {p['won']} / {p['tied']} / {p['lost']} | {p['verdict']} |")
    return lines


def merge_reports(reports: list[tuple[str, dict]]) -> dict:
    """Join bench reports (name, bench.json) into one: rows are keyed by method, target and seed,
    and a later report's row replaces an earlier one's (the search re-run after a change, or
    more seeds from `first_seed`). Speed is kept from the reports that ran searches, weighted
    by their episodes. A setting the reports differ in (e.g. the reward of searches re-run
    with another) becomes the list of its values: each row's `source` names its report.
    Refuses reports made on different dense models."""
    merged: dict | None = None
    rows: dict[tuple[str, float, int], dict] = {}
    searches = []
    for name, report in reports:
        settings = {k: v for k, v in report.items()  # a part's own facts stay in the part
                    if k not in ("results", "speed", "interrupted", "merged_from")}
        if merged is None:
            merged = {k: [v] for k, v in settings.items()}
        elif any(report.get(k) != merged.get(k, [None])[0]
                 for k in ("model", "dataset", "dense_test_accuracy")):
            raise UserError(f"{name}: another dense model; refusing to merge")
        for key, value in settings.items():
            values = merged.setdefault(key, [])
            if value not in values:
                values.append(value)
        for row in report["results"]:
            rows[(row["method"], row["target"], row["seed"])] = {**row, "source": name}
        n = sum(1 for row in report["results"] if row["method"].startswith("ddpg"))
        if n and report["speed"]["overhead_ratio"] is not None:
            sp = report["speed"]
            searches.append({"episodes": n * report["episodes"],
                             "search_s": n * report["episodes"] * sp["episode_s"],
                             "proxy_eval_s": sp["proxy_eval_s"]})
    if merged is None:
        raise UserError("nothing to merge")
    merged = {k: v[0] if len(v) == 1 else v for k, v in merged.items()}
    merged["merged_from"] = [name for name, _ in reports]
    merged["results"] = list(rows.values())
    merged["speed"] = _speed(searches)
    return merged


def plot_bench(report: dict, path: Path) -> None:
    """Mean test accuracy (± std over seeds) against sparsity per method: every method on the
    left, and on the right the same points near the top (the best mean at each target minus 2
    points up to dense), where the methods that matter differ by tenths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(report["results"])
    methods = list(dict.fromkeys(m for m, _ in summary))
    dense = 100 * report["dense_test_accuracy"]
    best = {}
    for (_, target), s in summary.items():
        best[target] = max(best.get(target, 0.0), 100 * s["mean"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, method in enumerate(methods):
        points = sorted((s["sparsity"], s["mean"], s["std"])
                        for (m, _), s in summary.items() if m == method)
        xs, ys, es = zip(*points)
        shift = 0.06 * (i - (len(methods) - 1) / 2)  # side by side, not on top of each other
        for ax in axes:
            ax.errorbar([100 * x + shift for x in xs], [100 * y for y in ys],
                        yerr=[100 * e for e in es], marker="o", ms=4, capsize=3, label=method)
    for ax in axes:
        ax.axhline(dense, color="k", lw=0.8, ls="--", label="dense")
        ax.set_xlabel("sparsity of prunable weights (%)")
    axes[0].set_ylabel("test accuracy after fine-tuning (%)")
    axes[0].set_title(f"{report['model']} on {report['dataset']}: every method", fontsize=9)
    axes[1].set_ylim(min(best.values()) - 2, max(dense, *best.values()) + 0.3)
    axes[1].set_title("near the top (best mean - 2 points and above)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
