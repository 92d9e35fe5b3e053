"""Baseline methods run as jobs: same layers, FC rule, budget and fine-tune as a search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlprune.agent.config import SearchConfig
from rlprune.agent.finalize import finalize_with
from rlprune.agent.policy import build_policy
from rlprune.env.baselines import METHODS
from rlprune.env.layers import nonzero_costs
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint

if TYPE_CHECKING:  # search.py imports this module
    from rlprune.agent.search import Dense


def baseline_env(config: SearchConfig, dense: Dense) -> PruningEnv:
    """The search's environment, for its layer ownership, FC masks and budget (no episodes)."""
    return PruningEnv(dense.model, dense.data.val, dense.input_shape, config.env_config(),
                      calibration=dense.data.train, device=config.device)


def baseline_counts(method: str, env: PruningEnv) -> list[int]:
    """Weights the baseline prunes in each of the env's agent layers, on its exact budget."""
    if method not in METHODS:
        raise UserError(f"unknown baseline {method!r}; choose from {', '.join(METHODS)}")
    return env.baseline_counts(method)


def baseline_sparsities(method: str, env: PruningEnv) -> dict[str, float]:
    counts = baseline_counts(method, env)
    sparsities = {layer.name: 0.0 for layer in env.net.layers}
    for layer, n in zip(env.agent_layers, counts):
        sparsities[layer.name] = n / layer.params
    for name, mask in env.fc.masks.items():
        sparsities[name] = float((~mask).sum()) / mask.numel()
    return sparsities


def run_baseline(method: str, config: SearchConfig, dense: Dense, on_epoch=None):
    """The baseline's policy (accuracies filled in) and its pruned, fine-tuned model."""
    env = baseline_env(config, dense)
    sparsities = baseline_sparsities(method, env)
    policy = build_policy(
        model=config.model, dataset=config.dataset, fingerprint=arch_fingerprint(dense.model),
        method=method, target=config.target, scope=config.scope, net=env.net,
        sparsities=sparsities, fc_rule=config.fc_rule, fc_k=env.fc.k,
        costs=nonzero_costs(env.net, sparsities),
        accuracy={"dense": dense.test_accuracy}, search={"seed": config.seed})
    done = finalize_with(config, dense, policy, on_epoch=on_epoch)
    policy["accuracy"].update(proxy=done.proxy_accuracy, pruned=done.pruned_accuracy,
                              finetuned=done.finetuned_accuracy)
    return policy, done.model
