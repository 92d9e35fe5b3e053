"""Every study in studies/ runs on a tiny setting, through the public API only.

Each study runs as `python studies/NAME.py ARGS` in a process forked from one that has done
the imports once (support.script_server: twenty cold starts would cost minutes of imports on
two cores), two at a time, beside the service's study (a plain subprocess from the start), in
one shared working folder with tiny run folders made by the CLI (support.study_jobs: the
commands). Each test asserts the exit code and something the study computed; the studies that
re-read committed data (`rescore=`, `report=`, bench_summary on a committed bench) are checked
against the figures the docs quote.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.assets import USER_MODELS
from support.script_server import Batch, Done, ScriptServer
from support.study_jobs import JOBS, REPO, SIGNALS, STUDIES


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    (root / "logs").mkdir()
    (root / "work").mkdir()
    path = os.pathsep.join(p for p in (str(USER_MODELS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    server = ScriptServer(root / "logs", env)
    batch = Batch(server, root / "work", JOBS, env, parallel=2)
    try:
        yield batch
    finally:
        batch.close()
        server.close()


def rows(out: str) -> list[list[str]]:
    """The markdown tables' body rows, cells stripped (headers and separators left out)."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    separator = [set(line) <= set("|-: ") for line in lines]
    body = [line for i, line in enumerate(lines)
            if not separator[i] and not (i + 1 < len(lines) and separator[i + 1])]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body]


def percentages_ok(cells: list[str]) -> bool:
    return all(0.0 <= float(c) <= 100.0 for c in cells)


def check_bench_summary(done: Done, cwd: Path) -> None:
    by_method = {r[0]: r for r in rows(done.out)}
    assert set(by_method) == {"ddpg", "uniform"} and by_method["ddpg"][1] == "0.5"
    bench = json.loads((cwd / "bench/bench.json").read_text())
    ddpg = next(r for r in bench["results"] if r["method"] == "ddpg")
    assert by_method["ddpg"][4] == f"{100 * ddpg['test_accuracy']:.2f}"


def check_compare_allocations(done: Done, cwd: Path) -> None:
    header = next(line for line in done.out.splitlines() if line.startswith("| policies"))
    assert header.split("|")[-5:-1] == [" c1 ", " c2 ", " c3 ", " f1 "]
    uniform = next(r for r in rows(done.out) if r[0] == "uniform")
    assert uniform[1] == "1" and percentages_ok(uniform[2:5])
    assert all(0.0 <= float(s) <= 1.0 for s in uniform[5:])


def check_table_of_accuracies(done: Done, cwd: Path) -> None:
    (row,) = rows(done.out)
    assert row[0] == "bench/ddpg-0.5-seed0" and percentages_ok(row[1:])
    assert float(row[3]) == pytest.approx((float(row[1]) + float(row[2])) / 2, abs=0.06)


def check_shift_sparsity(done: Done, cwd: Path) -> None:
    (row,) = rows(done.out)
    assert abs(float(row[5]) - float(row[2])) == pytest.approx(0.1, abs=0.002)  # c2's new share
    assert re.search(r"mean change after fine-tuning: [-+]\d+\.\d\d points over 1 runs",
                     done.out)


def check_pick_origin(done: Done, cwd: Path) -> None:
    assert "| pick (target 0.5) | seeds | ddpg − uniform |" in done.out
    (row,) = rows(done.out)
    assert row[1] == "1 (0)" and "±" in row[2]


def check_warmup_gain(done: Done, cwd: Path) -> None:
    assert done.out.startswith("ddpg: 1 runs; picks a seed policy's allocation ")


def check_reward_curves(done: Done, cwd: Path) -> None:
    (row,) = rows(done.out)
    run = cwd / "bench/runs/ddpg-0.5-seed0"
    status = json.loads((run / "status.json").read_text())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    warmup = max(e["reward"] for e in events if e["kind"] == "episode" and e["episode"] <= 2)
    assert row[:2] == ["ddpg-0.5-seed0", f"{warmup:.3f}"]
    assert row[3] == f"{status['best_episode']} ({status['best_reward']:.3f})"


def check_reevaluate_policies(done: Done, cwd: Path) -> None:
    (row,) = rows(done.out)
    assert row[:3] == ["ddpg", "0.5", "0"] and percentages_ok(row[3:4] + row[6:])


def check_channel_speed(done: Done, cwd: Path) -> None:
    summary = [r for r in rows(done.out) if r[0] == "0.5"]
    assert len(summary) == 1 and summary[0][1] == "1"
    assert all(float(c.rstrip("x")) > 0 for c in summary[0][2:])


def check_measure_defaults(done: Done, cwd: Path) -> None:
    table = rows(done.out)
    ks = [r for r in table if r[1].endswith("%")]  # the FC rule's trials
    assert ks and ks[0][0] == "3" and all(0 <= float(r[1][:-1]) <= 100 for r in ks)
    assert [r[0] for r in table if not r[1].endswith("%")] == ["0", "1"]


def check_proxy_agreement(done: Done, cwd: Path) -> None:
    lines = done.out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["weight 0.5 (fast)", "channel 0.5 (slim)"]
    for line in lines:
        assert int(re.search(r"max (\d+), total", line).group(1)) <= 2  # of 300 val images
        assert float(re.search(r"loss relative change median \S+, max (\S+)$", line)
                     .group(1)) < 1e-3


def check_rank_candidates(done: Done, cwd: Path) -> None:
    names = [r["name"] for r in json.loads((cwd / "ranked/candidates.json").read_text())]
    assert len(names) == 5 and names[0].startswith("ep")
    assert names[1:] == ["uniform", "global", "lamp", "erk"]
    assert "spearman(val_loss, test_finetuned) = " in done.out


def check_reward_signals(done: Done, cwd: Path) -> None:
    saved = json.loads((cwd / "signals.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["uniform", "global", "lamp", "erk", "random0"]
    assert saved["spearman"]["all"]["n"] == 5
    assert done.out.splitlines()[-2].startswith("all: n 5, val accuracy (acc) ")


def check_rescore(done: Done, cwd: Path) -> None:
    """The saved study's correlations again, to the digit (saved by scipy, here numpy's), and
    what decisions.md quotes of it: the fine-tune seeds agree at 0.64 among the near-best."""
    printed = {}
    for line in done.out.splitlines():
        group, _, values = line.partition(": ")
        printed[group] = dict(item.rsplit(" ", 1) for item in values.split(", "))
    saved = json.loads(SIGNALS.read_text())["spearman"]
    for group, values in saved.items():
        assert {k: float(printed[group][k]) for k in values} == values
    assert printed["val within 3 pts of best"]["fine-tune seed 0 vs seed 1"] == "0.64"


def check_short_tune_signal(done: Done, cwd: Path) -> None:
    saved = json.loads((cwd / "short.json").read_text())
    assert set(saved["cost_in_proxy_evals"]) == {"0", "2"}
    assert all("val_acc@2" in row for row in saved["rows"])
    assert done.out.splitlines()[-1].startswith("cost of one scoring, in proxy evaluations:")


def check_separating_cells(done: Done, cwd: Path) -> None:
    cell = json.loads((cwd / "cells/tiny.json").read_text())
    assert len(cell["rows"]) == 4 and all(len(r["test"]) == 2 for r in cell["rows"])
    assert "channel 0.5, 1 epochs, 4 allocations x 2 seeds: spread" in done.out
    assert "Spearman with the mean test accuracy, val acc after 2 steps:" in done.out


def check_cells_report(done: Done, cwd: Path) -> None:
    """benchmarks.md's row for this cell: spread 0.47, noise 0.26, ratio 1.82; 0.29, 1.13."""
    first = done.out.splitlines()[0]
    assert first.startswith("vgg-mini channel 0.8, 3 epochs, 20 allocations x 3 seeds: ")
    for figure in ("spread 0.47 pts", "seed noise 0.26 pts, ratio 1.82",
                   "better half by test: spread 0.29 pts, ratio 1.13"):
        assert figure in first
    assert len(done.out.splitlines()) == 2 + 3  # the spread, the reward, three step counts


def check_channel_reward_fidelity(done: Done, cwd: Path) -> None:
    saved = json.loads((cwd / "fidelity.json").read_text())
    assert [r["allocation"] for r in saved] == ["uniform", "global-l1", "global-taylor",
                                                "random0"]
    (row,) = rows(done.out)
    assert row[0] == "0.5" and len(row) == 7


def check_fidelity_rescore(done: Done, cwd: Path) -> None:
    """decisions.md's table ("Channel mode is rewarded by the val accuracy"), from the rows."""
    assert rows(done.out) == [
        ["0.5", "+0.74 / +0.32", "+0.64 / +0.58", "+0.74 / +0.32", "+0.66 / +0.61",
         "+0.40 / +0.63", "+0.88 / +0.60"],
        ["0.7", "+0.31 / +0.66", "+0.69 / +0.34", "+0.32 / +0.66", "+0.65 / +0.15",
         "-0.16 / -0.22", "+0.80 / +0.75"],
        ["0.8", "-0.51 / +0.13", "+0.77 / +0.34", "-0.50 / +0.12", "+0.78 / +0.32",
         "-0.57 / +0.39", "+0.94 / +0.72"]]


def check_scaling(done: Done, cwd: Path) -> None:
    (saved,) = json.loads((cwd / "scaling.json").read_text())
    assert saved["workers"] == 1 and saved["speedup"] == 1.0 and saved["episodes_per_s"] > 0
    assert rows(done.out)[0][:2] == ["as is", "1"]


def check_time_search_parts(done: Done, cwd: Path) -> None:
    table = rows(done.out)
    assert [r[:2] for r in table] == [["8-8", "1"]] * 4 and all(float(r[4]) > 0 for r in table)


def check_width_speed(done: Done, cwd: Path) -> None:
    table = rows(done.out)
    assert [r[0] for r in table] == ["x1", "x0.71", "x0.5"]
    assert [r[3] for r in table] == ["1.00x", "2.00x", "3.94x"]  # the FLOPs of the widths


def check_speed_under_load(done: Done, cwd: Path) -> None:
    report = json.loads((cwd / "speed.json").read_text())
    assert [r["load"] for r in report["rows"]] == ["alone", "loaded", "arrives"]
    for row in report["rows"]:  # the ratio from the search's own times: its evaluations fit
        assert row["evals"] == 4 and 0 < row["evals_s"] < row["search_s"], row
        assert row["overhead_ratio"] > 1 and 0 < row["proxy_efficiency"], row
    assert set(report["differences"]) == {"loaded", "arrives"}
    assert "| load | search s | evals s | overhead ratio |" in done.out


def check_service_load(done: Done, cwd: Path) -> None:
    report = json.loads((cwd / "load.json").read_text())
    assert (report["requests"], report["distinct_ids"], report["jobs_in_registry"]) == (2, 1, 1)
    assert report["states"] == ["finished"] and report["max_running_seen"] <= 1
    assert len(report["hostile"]) == 20
    assert all(400 <= h["status"] < 500 and h["wrote_nothing"] for h in report["hostile"])


CHECKS = {
    "service_load": check_service_load, "rank_candidates": check_rank_candidates,
    "scaling": check_scaling, "reward_signals": check_reward_signals,
    "short_tune_signal": check_short_tune_signal, "separating_cells": check_separating_cells,
    "channel_reward_fidelity": check_channel_reward_fidelity,
    "proxy_agreement": check_proxy_agreement, "measure_defaults": check_measure_defaults,
    "finetune_seeds": check_table_of_accuracies, "shift_sparsity": check_shift_sparsity,
    "reevaluate_policies": check_reevaluate_policies, "channel_speed": check_channel_speed,
    "time_search_parts": check_time_search_parts, "width_speed": check_width_speed,
    "speed_under_load": check_speed_under_load,
    "bench_summary": check_bench_summary, "compare_allocations": check_compare_allocations,
    "pick_origin": check_pick_origin, "warmup_gain": check_warmup_gain,
    "reward_curves": check_reward_curves, "reward_curves tensorboard": check_reward_curves,
    "reward_signals rescore": check_rescore,
    "channel_reward_fidelity rescore": check_fidelity_rescore,
    "separating_cells report": check_cells_report,
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_study_runs_on_a_tiny_setting(batch, name):
    done = batch.result(name)
    assert done.code == 0, f"{' '.join(done.argv)}\n{done.err[-3000:]}"
    CHECKS[name](done, batch.cwd)


def test_every_study_is_smoke_tested():
    # page_screenshots needs Chromium and a service: test_web_page.py runs it on its jobs
    scripts = {p.stem for p in STUDIES.glob("*.py")} - {"study_tools", "service_client",
                                                       "page_screenshots"}
    assert scripts == {name.split()[0] for name in CHECKS}


def test_a_study_runs_as_a_plain_script_and_gives_the_figures_the_docs_quote():
    """`python studies/bench_summary.py` on the committed bench decisions.md cites: LeNet-5
    every layer at 0.98, the search's 86.35 against LAMP's 83.10 before fine-tuning."""
    done = subprocess.run([sys.executable, "studies/bench_summary.py",
                           "docs/bench/lenet5-agent/bench.json"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| ddpg | 0.98 | 88.74 | 86.35 | 95.91 |" in done.stdout
    assert "| lamp | 0.98 | 86.60 | 83.10 | 95.94 |" in done.stdout


def _rlprune_imports(path: Path) -> list[str]:
    """Every rlprune name an import of `path` names: `rlprune`, `rlprune.x` (import
    rlprune.x, from rlprune.x import ...), `rlprune:x` (from rlprune import x)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "rlprune":
                names += [f"rlprune:{alias.name}" for alias in node.names]
    return [n for n in names if n.split(":")[0] == "rlprune" or n.startswith("rlprune.")]


def test_studies_import_only_the_public_rlprune():
    import rlprune

    public = {"rlprune", *(f"rlprune:{name}" for name in rlprune.__all__)}
    found = {p.name: _rlprune_imports(p) for p in sorted(STUDIES.glob("*.py"))}
    assert {name: [n for n in names if n not in public] for name, names in found.items()} == {
        name: [] for name in found}
    assert sum("rlprune" in names for names in found.values()) >= 12  # the check sees them


def test_the_studies_helpers_are_public_and_documented():
    import rlprune

    for name in ("load_dense", "policy_of", "ChannelPruningEnv"):
        assert name in rlprune.__all__ and getattr(rlprune, name).__doc__
    for name in ("load_dense", "policy_of"):
        function = getattr(rlprune, name)
        documented = set(re.findall(r":param (\w+):", function.__doc__))
        assert documented == set(inspect.signature(function).parameters)
