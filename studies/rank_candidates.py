"""Does the search's final pick predict the fine-tuned result? Run one search, then score its
best distinct allocations and the four baselines several ways (val accuracy and loss, train
accuracy, test before fine-tuning, val after one epoch of fine-tuning) and print the rank
correlations with the fine-tuned test accuracy.

    python studies/rank_candidates.py runs/exp-rank-lenet5-s1 model=lenet5 fc_rule=agent \
        target=0.95 seed=1 action_mapping=feasible

Any SearchConfig field can be set as key=value (`candidates=N`: the N best allocations, 12 by
default). Candidates: the best distinct allocations by reward (ties in episode order), then
uniform, global, lamp, erk. Writes OUT/candidates.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from study_tools import (
    accuracy,
    baseline_sparsities,
    config_from,
    finalize_with,
    score,
    search_env,
    search_settings,
    spearman,
)

import rlprune


def searched(config: rlprune.SearchConfig, dense) -> list[tuple[float, int, dict]]:
    """(reward, episode, sparsities) of every episode of one search (in memory, the search's
    pick left unselected and unfine-tuned: only its episodes are used)."""
    played = []

    def record(event: rlprune.Event) -> None:
        if event.kind == "episode":
            played.append((event.reward, event.episode, event.sparsities))

    rlprune.search(dense.model, dense.data, config.target, callback=record,
                   **{**search_settings(config), "select_top_k": 0, "finetune_epochs": 0})
    return played


def main(out: str, pairs: list[str]) -> None:
    opts = dict(p.split("=", 1) for p in pairs)
    top = int(opts.pop("candidates", 12))
    config = config_from([f"{k}={v}" for k, v in opts.items()])
    dense = rlprune.load_dense(config)
    Path(out).mkdir(parents=True, exist_ok=True)
    seen, candidates = set(), []
    for reward, episode, sparsities in sorted(searched(config, dense),
                                              key=lambda p: (-p[0], p[1])):
        key = tuple(round(v, 4) for v in sparsities.values())
        if key not in seen and len(candidates) < top:
            seen.add(key)
            candidates.append((f"ep{episode}", reward, sparsities))
    env = search_env(config, dense)  # the layers, FC rule and budget of the search
    candidates += [(m, None, baseline_sparsities(m, env))
                   for m in ("uniform", "global", "lamp", "erk")]
    rows = []
    for name, reward, sparsities in candidates:
        policy = rlprune.policy_of(env, sparsities, model=config.model, dataset=config.dataset,
                                   method=name)
        pruned = finalize_with(config, dense, policy, epochs=0)
        val_acc, val_loss = score(pruned.model, dense.data.val)
        short_acc, short_loss = score(finalize_with(config, dense, policy, epochs=1).model,
                                      dense.data.val)
        tuned = finalize_with(config, dense, policy)
        rows.append(dict(name=name, reward=reward, val_acc=val_acc, val_loss=val_loss,
                         train_acc=accuracy(pruned.model, dense.data.train),
                         test_pruned=pruned.pruned_accuracy, val_acc_1epoch=short_acc,
                         val_loss_1epoch=short_loss, test_finetuned=tuned.finetuned_accuracy,
                         sparsities=sparsities))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sparsities"}), flush=True)
    tuned = [r["test_finetuned"] for r in rows]
    for key in ("val_acc", "val_loss", "train_acc", "test_pruned", "val_acc_1epoch",
                "val_loss_1epoch"):
        sign = -1 if "loss" in key else 1
        rho = spearman([sign * r[key] for r in rows], tuned)
        print(f"spearman({key}, test_finetuned) = {rho:.2f}")
    Path(out, "candidates.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
