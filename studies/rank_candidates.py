"""Does the search's final pick predict the fine-tuned result? Run one search, then score its
best distinct allocations and the four baselines several ways (val accuracy and loss, train
accuracy, test before fine-tuning, val after one epoch of fine-tuning) and print the rank
correlations with the fine-tuned test accuracy.

    python docs/studies/rank_candidates.py runs/exp-rank-lenet5-s1 model=lenet5 fc_rule=agent \
        target=0.95 seed=1 action_mapping=feasible

Any SearchConfig field can be set as key=value. Candidates: the 12 best distinct allocations
by reward (ties in episode order), then uniform, global, lamp, erk.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from scipy.stats import spearmanr
from study_tools import baseline_env, baseline_sparsities, finalize_with

from rlprune.agent.config import RENAMED, SearchConfig
from rlprune.agent.search import Search
from rlprune.env.evaluate import ProxyEvaluator
from rlprune.env.layers import nonzero_costs
from rlprune.env.policy import build_policy
from rlprune.models.registry import arch_fingerprint
from rlprune.service.jobs.dense_loader import load_dense


def parse(pairs: list[str]) -> SearchConfig:
    config = SearchConfig(checkpoint_every=10_000, device="cpu")  # the studies ran on the CPU
    types = {f.name: f.type for f in dataclasses.fields(SearchConfig)}
    for key, value in (p.split("=", 1) for p in pairs):
        key = RENAMED.get(key, key)  # checkpoint= is weights=
        kind = types[key]
        setattr(config, key, value.lower() == "true" if kind == "bool" else
                float(value) if kind == "float" else int(value) if kind == "int" else value)
    return config


def candidate_policy(config: SearchConfig, dense, env, name: str,
                     sparsities: dict[str, float]) -> dict:
    """A policy.json dict for one candidate allocation over `env`'s layers (no accuracies)."""
    return build_policy(
        model=config.model, dataset=config.dataset, fingerprint=arch_fingerprint(dense.model),
        method=name, target=config.target, scope=config.scope, net=env.net,
        sparsities=sparsities, fc_rule=config.fc_rule, fc_k=env.fc.k,
        costs=nonzero_costs(env.net, sparsities), accuracy={}, search={})


def main(out: str, pairs: list[str]) -> None:
    config = parse(pairs)
    dense = load_dense(config)
    search = Search(config, dense)
    played = []
    record = search._on_episode_end
    search._on_episode_end = lambda r, info: (played.append((r, len(played) + 1,
                                                             info["sparsities"])),
                                              record(r, info))
    Path(out).mkdir(parents=True, exist_ok=True)
    search.run()  # in memory: no run folder, no checkpoints
    seen, candidates = set(), []
    for reward, episode, sparsities in sorted(played, key=lambda p: (-p[0], p[1])):
        key = tuple(round(v, 4) for v in sparsities.values())
        if key not in seen and len(candidates) < 12:
            seen.add(key)
            candidates.append((f"ep{episode}", reward, sparsities))
    fresh = baseline_env(config, dense)  # dense weights: the search's env is masked now
    candidates += [(m, None, baseline_sparsities(m, fresh))
                   for m in ("uniform", "global", "lamp", "erk")]
    rows = []
    for name, reward, sparsities in candidates:
        policy = candidate_policy(config, dense, fresh, name, sparsities)
        pruned = finalize_with(config, dense, policy, epochs=0)
        val_acc, val_loss = ProxyEvaluator(dense.data.val, "cpu").score(pruned.model)
        train_acc, _ = ProxyEvaluator(dense.data.train, "cpu").score(pruned.model)
        short = finalize_with(config, dense, policy, epochs=1)
        short_acc, short_loss = ProxyEvaluator(dense.data.val, "cpu").score(short.model)
        tuned = finalize_with(config, dense, policy)
        rows.append(dict(name=name, reward=reward, val_acc=val_acc, val_loss=val_loss,
                         train_acc=train_acc, test_pruned=pruned.pruned_accuracy,
                         val_acc_1epoch=short_acc, val_loss_1epoch=short_loss,
                         test_finetuned=tuned.finetuned_accuracy, sparsities=sparsities))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sparsities"}), flush=True)
    tuned = [r["test_finetuned"] for r in rows]
    for key in ("val_acc", "val_loss", "train_acc", "test_pruned", "val_acc_1epoch",
                "val_loss_1epoch"):
        sign = -1 if "loss" in key else 1
        rho = spearmanr([sign * r[key] for r in rows], tuned)[0]
        print(f"spearman({key}, test_finetuned) = {rho:.2f}")
    Path(out, "candidates.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
