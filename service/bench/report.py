"""What a bench reports: its table (bench.md), the seed-by-seed differences and their
verdicts, its plot (bench.png), and the merge of several benches (`rlprune bench --merge`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rlprune.models.errors import UserError
from rlprune.service.jobs.files import write_json, write_text_atomic


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
    write_bench(merged, out)
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


def write_bench(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    write_text_atomic(out / "bench.md", bench_table(report))
    plot_bench(report, out / "bench.png")


SPEED_RATES = ("proxy_gflops", "matmul_gflops", "proxy_efficiency")


def speed_summary(speed: list[dict]) -> dict:
    """Searches' speed records joined: s per episode, one proxy evaluation, their ratio, and
    the evaluation's GFLOP/s beside the matmul's (evaluation-weighted means; records from
    before those were measured have none).

    The ratio (`overhead_ratio`) is the searches' wall time over their evaluations' own
    durations, both taken inside the same searches (`evals`, `evals_s`), so a load on the
    machine slows both alike; a record from before those were recorded counts `episodes`
    evaluations of its `proxy_eval_s`, timed before its search."""
    evals = sum(s.get("evals", s["episodes"]) for s in speed)
    evals_s = sum(s["evals_s"] if s.get("evals_s") is not None
                  else s["episodes"] * s["proxy_eval_s"] for s in speed)
    if not evals or evals_s <= 0:
        return {"episode_s": None, "proxy_eval_s": None, "overhead_ratio": None}
    wall = sum(s["search_s"] for s in speed)
    out = {"episode_s": wall / evals, "proxy_eval_s": evals_s / evals,
           "overhead_ratio": wall / evals_s}
    rated = [s for s in speed if all(s.get(k) is not None for k in SPEED_RATES)]
    if rated:
        weight = sum(s.get("evals", s["episodes"]) for s in rated)
        if weight:
            out.update({k: sum(s.get("evals", s["episodes"]) * s[k] for s in rated) / weight
                        for k in SPEED_RATES})
    return out


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
                  f"{sp['overhead_ratio']:.3f} (the searches' wall time over their "
                  "evaluations' own)."]
        if sp.get("proxy_efficiency") is not None:
            lines[-1] += (f" The evaluation computes {sp['proxy_gflops']:.1f} GFLOP/s, "
                          f"{sp['proxy_efficiency']:.2f} of a 2048x2048 fp32 matmul "
                          f"({sp['matmul_gflops']:.0f} GFLOP/s) timed round by round "
                          "beside it before each search.")
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
                             "proxy_eval_s": sp["proxy_eval_s"],
                             **{k: sp.get(k) for k in SPEED_RATES}})
    if merged is None:
        raise UserError("nothing to merge")
    merged = {k: v[0] if len(v) == 1 else v for k, v in merged.items()}
    merged["merged_from"] = [name for name, _ in reports]
    merged["results"] = list(rows.values())
    merged["speed"] = speed_summary(searches)
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
    best: dict[float, float] = {}
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
