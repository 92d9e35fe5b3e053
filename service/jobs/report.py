"""report.md for a run: the result table and two plots (per-layer sparsity, reward curve)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from rlprune.env.policy import entries, granularity_of  # noqa: E402
from rlprune.service.jobs.files import write_text_atomic  # noqa: E402

# a latency measured where the 1-minute load average was over the CPUs the job could use, or
# whose repeats spread more than this ((p90 - p10) / median), is flagged as not representative
# (docs/decisions.md, "Latency figures say when the machine was loaded")
SPREAD_LIMIT = 0.5
OTHERS_LIMIT = 0.5  # cores other processes kept busy while latencies were timed


BUDGET_NAMES = {"flops": "FLOPs", "params": "parameters", "latency": "estimated latency"}
OWNER_COLORS = {"agent": "tab:blue", "fc-rule": "tab:orange", "none": "tab:gray"}


def plot_sparsity(policy: dict, path: Path) -> None:
    fig = sparsity_figure(policy)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def sparsity_figure(policy: dict) -> Figure:
    """Per layer (group) the fraction pruned, as bars by owner, and the target for what it
    is: in weight mode a line, the target being the same fraction over all prunable weights
    (or the agent's); in channel mode a legend entry only, the target being a fraction of the
    whole network's budget (FLOPs, ...), which a group's channels removed do not measure.
    The legend sits outside the axes, so it hides no bar."""
    layers = entries(policy)
    channel = granularity_of(policy) == "channel"
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(layers)) + 2.5, 3.5))
    ax.bar(range(len(layers)), [100 * layer["sparsity"] for layer in layers],
           color=[OWNER_COLORS.get(layer["owner"], "tab:green") for layer in layers])
    ax.set_xticks(range(len(layers)), [layer["name"] for layer in layers], rotation=60,
                  ha="right", fontsize=7)
    ax.set_ylabel("channels removed (%)" if channel else "weights pruned (%)")
    ax.set_ylim(0, 100)
    target, achieved = policy["target"], policy["achieved"]
    if channel:
        reference = Line2D([], [], ls="none", label=(
            f"whole network: {100 * achieved['sparsity']:.1f}% of its "
            f"{BUDGET_NAMES.get(target['budget'], target['budget'])} removed (target "
            f"{100 * target['sparsity']:g}%)"))
    else:
        which = ("the agent's layers' weights" if target.get("scope") == "agent"
                 else "all prunable weights")
        reference = ax.axhline(100 * target["sparsity"], color="k", lw=0.8, ls="--",
                               label=f"target: {100 * target['sparsity']:g}% of {which}")
    present = dict.fromkeys(layer["owner"] for layer in layers)
    handles = [Patch(color=OWNER_COLORS.get(owner, "tab:green"), label=owner)
               for owner in present]
    ax.legend(handles=[reference, *handles], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(f"{policy['model']} on {policy['dataset']}: per-"
                 f"{'group channels removed' if channel else 'layer sparsity'} "
                 f"({policy['method']})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_rewards(rewards: list[float], warmup: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    episodes = range(1, len(rewards) + 1)
    best, running = [], float("-inf")
    for r in rewards:
        running = max(running, r)
        best.append(running)
    ax.plot(episodes, rewards, ".", ms=3, alpha=0.6, label="episode reward")
    ax.plot(episodes, best, "-", lw=1.2, label="best so far")
    ax.axvline(warmup + 0.5, color="k", lw=0.8, ls="--", label="end of warm-up")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def result_rows(policy: dict, deploy: dict | None = None) -> list[tuple[str, str]]:
    """The result table; `deploy` (deployment.json) adds size and latency."""
    acc, ach = policy["accuracy"], policy["achieved"]
    channel = granularity_of(policy) == "channel"
    left = "pruned" if channel else "non-zero"

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.2f}%"

    rows = [
        ("test accuracy, dense", pct(acc.get("dense"))),
        ("test accuracy, pruned (no fine-tune)", pct(acc.get("pruned"))),
        ("test accuracy, fine-tuned", pct(acc.get("finetuned"))),
        ("proxy (val) accuracy of the policy", pct(acc.get("proxy"))),
        (f"{BUDGET_NAMES.get(ach['budget'], ach['budget'])} removed" if channel
         else "sparsity of prunable weights",
         pct(ach["sparsity"])),
        (f"params dense → {left}", f"{ach['params_dense']:,} → {ach['params_nonzero']:,}"),
        (f"FLOPs dense → {left}", f"{ach['flops_dense']:,} → {ach['flops_nonzero']:,}"),
    ]
    if deploy:
        rows += _deploy_rows(deploy)
    return rows


def _deploy_rows(deploy: dict) -> list[tuple[str, str]]:
    """Size on disk of what the user ships (the dense state_dict against the pruned model's
    file, and its int8 file), PyTorch latency, and how to write the file."""
    size = deploy["size_mb"]
    if "file_mb" in deploy:
        rows = [(f"size on disk, dense state_dict → {deploy['artifact']} (MB)",
                 f"{size['dense']:.3f} → {deploy['file_mb']:.3f} "
                 f"({size['dense'] / deploy['file_mb']:.1f}x smaller)")]
        if deploy.get("int8_mb"):
            rows.append((f"size on disk, int8 {deploy['artifact']} (MB)",
                         f"{deploy['int8_mb']:.3f} ({size['dense'] / deploy['int8_mb']:.1f}x "
                         "smaller" + (f"; {deploy['int8_file']}" if deploy.get("int8_file")
                                      else "") + ")"))
    else:  # a run folder written before the artifact was measured
        rows = [("size dense → pruned (MB, state_dict)",
                 f"{size['dense']:.3f} → {size['pruned']:.3f}")]
    for batch, t in deploy["latency_ms"].items():
        images = batch.removeprefix("batch")
        rows.append((f"PyTorch CPU latency, batch {images} (ms, median)", _flagged(
            f"{t['dense']:.2f} → {t['pruned']:.2f} ({t['speedup']:.2f}x)",
            deploy.get("conditions"), images)))
    check = deploy.get("latency_budget")
    if check:
        rows.append((f"ONNX Runtime latency, batch {check['batch']} (ms, median)", _flagged(
            f"{check['dense_ms']:.2f} → {check['pruned_ms']:.2f} ({check['speedup']:.2f}x; "
            f"the latency budget's estimate {check['estimated_speedup']:.2f}x, "
            f"{100 * check['error']:+.1f}%)", check.get("conditions"), check["batch"])))
    if deploy.get("note"):
        rows.append(("speed", deploy["note"]))
    if deploy.get("command"):
        rows.append(("deployable file", deploy["command"]))
    return rows


def _flagged(text: str, conditions: dict | None, batch: int | str) -> str:
    note = load_note(conditions, batch)
    return text if note is None else f"{text}; {note}"


def load_note(conditions: dict | None, batch: int | str | None = None) -> str | None:
    """A few words where a latency is not representative: other processes kept over
    `OTHERS_LIMIT` cores busy while it was timed (recorded since 2026-12-06; before, the
    1-minute load average over the CPUs, which also counts the job's own work), or the repeats
    spread more than `SPREAD_LIMIT` (of the batch size `batch`, or of any); None where it
    looks sound or was not recorded."""
    if not conditions:
        return None
    load, cpus = conditions.get("load_1min"), conditions.get("cpus")
    others = conditions.get("others_cores")
    if others is not None and others > OTHERS_LIMIT:
        return (f"measured while other processes kept {others:.1f} of {cpus} cores busy: "
                "not representative")
    if others is None and load is not None and cpus and load > cpus:
        return f"measured under load (load {load:.1f} on {cpus} cores): not representative"
    spreads = conditions.get("spread") or {}
    wide = spreads.get(str(batch)) if batch is not None else max(spreads.values(), default=None)
    if wide is not None and wide > SPREAD_LIMIT:
        return f"repeats spread {100 * wide:.0f}% (p10 to p90): not representative"
    return None


def write_report(run: Path, policy: dict, rewards: list[float], warmup: int,
                 timings: dict[str, float], deploy: dict | None = None,
                 proxy: dict | None = None) -> Path:
    plot_sparsity(policy, run / "sparsity.png")
    if rewards:
        plot_rewards(rewards, warmup, run / "rewards.png")
    lines = [f"# {policy['model']} on {policy['dataset']}: target "
             f"{policy['target']['sparsity']:g} "
             f"({policy['target'].get('scope') or policy['target'].get('budget')})", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result_rows(policy, deploy)]
    search = policy.get("search") or {}
    fc = policy.get("fc_rule") or {}
    channel = granularity_of(policy) == "channel"
    if channel:
        fc_text = (f"channels removed by {policy['criterion']} within each group, "
                   f"{policy['budget']} budget")
    elif fc.get("kind") == "3sigma" and fc.get("k") is not None:
        fc_text = f"FC layers by the k-sigma rule, k = {fc['k']:g}"
    elif fc.get("kind") == "agent":
        fc_text = "FC layers chosen by the same method"
    else:
        fc_text = "FC layers left dense"
    found = (f"best policy at episode {search['best_episode']} of {search['episodes']}"
             if search.get("best_episode") else "no search")
    selection = search.get("selection")
    if selection:
        found = (f"{selection['chosen']} selected by recovered val accuracy among "
                 f"{len(selection['candidates'])} candidates of {search['episodes']} episodes")
    if search.get("action_mapping"):
        found += f", {search['action_mapping']} actions"
    lines += ["", f"Method `{policy['method']}`; {fc_text}; {found} (seed "
              f"{search.get('seed')}).", "",
              f"| {'group' if channel else 'layer'} | kind | owner | "
              f"{'channels' if channel else 'params'} | {'removed' if channel else 'sparsity'} |",
              "|---|---|---|---:|---:|"]
    lines += [f"| {e['name']} | {e['kind']} | {e['owner']} | {e['size']:,} | "
              f"{100 * e['sparsity']:.1f}% |" for e in entries(policy)]
    lines += ["", "![per-layer sparsity](sparsity.png)", ""]
    if rewards:
        lines += ["![reward per episode](rewards.png)", ""]
    if selection:
        lines += _selection_table(selection) + [""]
    if timings:
        lines += ["| stage | wall time (s) |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    if proxy:
        lines += ["", f"One proxy evaluation {1000 * proxy['proxy_eval_s']:.1f} ms: "
                  f"{proxy['proxy_gflops']:.1f} GFLOP/s, "
                  f"{proxy['proxy_efficiency']:.2f} of a 2048x2048 fp32 matmul's "
                  f"{proxy['matmul_gflops']:.0f} GFLOP/s, the two timed round by round "
                  "before the search."]
        if proxy.get("overhead_ratio") is not None:
            lines[-1] += (f" The search's {proxy['evals']} evaluations took "
                          f"{proxy['evals_s']:.1f} s: its wall time is "
                          f"{proxy['overhead_ratio']:.2f}x that (overhead ratio).")
    path = run / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _selection_table(selection: dict) -> list[str]:
    """Every candidate of the selection stage with its reward and its val scores per rung."""
    rungs = max(len(c["scores"]) for c in selection["candidates"])
    steps = next(c["scores"] for c in selection["candidates"] if len(c["scores"]) == rungs)
    head = " | ".join(f"val acc after {s['steps']} steps" for s in steps)
    lines = [f"| candidate | search reward | {head} |",
             "|---|---:|" + "---:|" * rungs]
    for c in selection["candidates"]:
        reward = "—" if c["reward"] is None else f"{c['reward']:.4f}"
        scores = [f"{100 * s['val_accuracy']:.2f}%" for s in c["scores"]]
        scores += [""] * (rungs - len(scores))
        mark = " (selected)" if c["name"] == selection["chosen"] else ""
        lines.append(f"| {c['name']}{mark} | {reward} | {' | '.join(scores)} |")
    return lines
