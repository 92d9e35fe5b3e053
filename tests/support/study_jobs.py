"""The studies' smoke runs: one tiny command line per study (and the tiny run folders some
of them read), run by tests/test_studies.py in a script server's shared working folder.

The tests' tiny net (`rlprune_agent_tinynet:make`, tests/usermodels/) pre-trained a few epochs
on `digits` (cached where `rlprune` looks for it), a weight bench (a 4-episode search and the
uniform baseline) and a channel bench (uniform), for the studies that read run folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.script_server import Job

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "studies"
TINY = ("model=rlprune_agent_tinynet:make", "dataset=digits")
BENCH = ("--model", "rlprune_agent_tinynet:make", "--dataset", "digits", "--targets", "0.5",
         "--seeds", "1", "--episodes", "4", "--warmup", "2", "--finetune-epochs", "1",
         "--hidden", "16,16", "--batch-size", "8", "--select-top-k", "0", "--quiet")
SIGNALS = STUDIES / "signals" / "signals-lenet5-agent-0.95.json"


def study(name: str, *args: str) -> list[str]:
    return [str(STUDIES / f"{name}.py"), *args]


def shifted(cwd: Path) -> list[str]:
    """c3 of the bench's search 0.05 less (or more) sparse, and c2 (half c3's weights) 0.1 more
    (or less), keeping the total: whichever stays within [0, 1]."""
    policy = json.loads((cwd / "bench/runs/ddpg-0.5-seed0/policy.json").read_text())
    sparsity = {layer["name"]: layer["sparsity"] for layer in policy["layers"]}
    step = -0.05 if sparsity["c2"] <= 0.9 and sparsity["c3"] >= 0.05 else 0.05
    return study("shift_sparsity", "bench/runs/ddpg-*", "--layer", "c3", "--sparsity",
                 f"{sparsity['c3'] + step:.6f}", "--compensate", "c2")


def tensorboard_only(cwd: Path) -> list[str]:
    """The bench's search as a run folder from before events.jsonl (TensorBoard events only)."""
    run = cwd / "bench/runs/ddpg-0.5-seed0"
    old = cwd / "oldbench/runs/ddpg-0.5-seed0"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("events.jsonl", "checkpoints"))
    return study("reward_curves", "oldbench", "every=2")


# longest first: the service (cold: it starts with the script server, a real `python
# studies/service_load.py`) waits on processes of its own, the searches time a matmul; the rest
# in the order their inputs are ready
JOBS = {
    "service_load": Job(study("service_load", "jobs=1", "clients=1", "max_running=1",
                              "out=load.json", "runs=service"), cold=True),
    "pretrain": Job(["-m", "rlprune", "pretrain", "--model", "rlprune_agent_tinynet:make",
                     "--dataset", "digits", "--epochs", "3"]),
    "bench": Job(["-m", "rlprune", "bench", *BENCH, "--fc-k", "1", "--methods", "ddpg,uniform",
                  "--out", "bench"], after=("pretrain",)),
    "channel bench": Job(["-m", "rlprune", "bench", *BENCH, "--granularity", "channel",
                          "--methods", "uniform", "--out", "cbench"], after=("pretrain",)),
    "rank_candidates": Job(study("rank_candidates", "ranked", *TINY, "target=0.5", "episodes=4",
                                 "warmup=2", "hidden=16,16", "batch_size=8", "fc_k=1",
                                 "finetune_epochs=1", "candidates=1"), after=("pretrain",)),
    "scaling": Job(study("scaling", *TINY, "target=0.5", "episodes=4", "warmup=2", "ks=1",
                         "sleeps=0", "out=scaling.json"), after=("pretrain",)),
    "reward_signals": Job(study("reward_signals", "out=signals.json", *TINY, "target=0.5",
                                "fc_k=1", "random=1", "finetune_epochs=1"), after=("pretrain",)),
    "short_tune_signal": Job(study("short_tune_signal", "signals.json", "out=short.json",
                                   "steps=0,2"), after=("reward_signals",)),
    "separating_cells": Job(study("separating_cells", "out=cells/tiny.json", *TINY,
                                  "granularity=channel", "target=0.5", "epochs=1", "random=1",
                                  "seeds=2", "steps=2"), after=("pretrain",)),
    "channel_reward_fidelity": Job(study("channel_reward_fidelity", "out=fidelity.json", *TINY,
                                         "targets=0.5", "random=1", "epochs=1", "steps=2"),
                                   after=("pretrain",)),
    "proxy_agreement": Job(study("proxy_agreement", *TINY, "allocations=2",
                                 "cells=weight:0.5,channel:0.5"), after=("pretrain",)),
    "measure_defaults": Job(study("measure_defaults", "--model", "rlprune_agent_tinynet:make",
                                  "--dataset", "digits", "--target", "0.5", "--episodes", "2",
                                  "--batches", "0,1"), after=("pretrain",)),
    "finetune_seeds": Job(study("finetune_seeds", "--target", "0.5", "bench",
                                "--finetune-seeds", "2", "--epochs", "1"), after=("bench",)),
    "shift_sparsity": Job(shifted, after=("bench",)),
    "reevaluate_policies": Job(study("reevaluate_policies", "bench", "--targets", "0.5",
                                     "--methods", "ddpg"), after=("bench",)),
    "channel_speed": Job(study("channel_speed", "cbench", "method=uniform", "repeats=3",
                               "threads=1"),
                         after=("channel bench",)),
    "time_search_parts": Job(study("time_search_parts", "repeats=1", "warm=16", "hidden=8-8",
                                   "threads=1")),
    "width_speed": Job(study("width_speed", "batch=2", "repeats=3", "threads=1")),
    "speed_under_load": Job(study("speed_under_load", *TINY, "target=0.5", "fc_k=1",
                                  "episodes=4", "warmup=2", "pairs=1", "out=speed.json"),
                            after=("pretrain",)),
    "bench_summary": Job(study("bench_summary", "bench/bench.json"), after=("bench",)),
    "compare_allocations": Job(study("compare_allocations", "search=bench/runs/ddpg-*/policy.json",
                                     "uniform=bench/runs/uniform-*/policy.json"),
                               after=("bench",)),
    "pick_origin": Job(study("pick_origin", "bench/bench.json", "0.5", "auto",
                             "bench/runs/ddpg-*"), after=("bench",)),
    "warmup_gain": Job(study("warmup_gain", "bench"), after=("bench",)),
    "reward_curves": Job(study("reward_curves", "bench", "every=2"), after=("bench",)),
    "reward_curves tensorboard": Job(tensorboard_only, after=("bench",)),
    "reward_signals rescore": Job(study("reward_signals", f"rescore={SIGNALS}")),
    "channel_reward_fidelity rescore": Job(study(
        "channel_reward_fidelity", f"rescore={STUDIES / 'channel-fidelity-vgg-mini.json'}")),
    "separating_cells report": Job(study(
        "separating_cells", f"report={REPO / 'docs/bench/cells/vgg-mini-channel-0.8-e3.json'}")),
}
