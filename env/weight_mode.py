"""The `weight` granularity: each agent step sets one layer's weight sparsity (fine-grained
magnitude masks; the fully-connected layers by the k-sigma rule). Registered on import."""

from __future__ import annotations

from torch import nn

from rlprune.env.budget import no_agent_layers_error
from rlprune.env.config import WEIGHT_ONLY, EnvConfig
from rlprune.env.finalize import masked_copy
from rlprune.env.granularity import Granularity, register
from rlprune.env.layers import describe, nonzero_costs
from rlprune.env.policy import build_policy, layer_entries, validate_layers
from rlprune.env.pruning_env import PruningEnv


def check_prunable(model: nn.Module, input_shape: tuple[int, int, int],
                   config: EnvConfig) -> None:
    """Refuse a model with no layer for the agent (before any training)."""
    if not describe(model, input_shape, config.fc_rule).owned_by("agent"):
        raise no_agent_layers_error()


def policy(env: PruningEnv, sparsities: dict[str, float], *, config, **common) -> dict:
    """The weight policy of an allocation on `env`'s layers (FC rule included)."""
    return build_policy(**common, target=config.target, scope=config.scope, net=env.net,
                        sparsities=sparsities, fc_rule=config.fc_rule, fc_k=env.fc.k,
                        costs=nonzero_costs(env.net, sparsities))


def summary(config, env: PruningEnv) -> str:
    k = env.fc.k
    fc = (f"FC layers by the k-sigma rule (k={k:g})" if k is not None else
          "FC layers by the agent" if config.fc_rule == "agent" else "FC layers dense")
    return (f"target {config.target:g} ({config.scope}), {len(env.agent_layers)} agent "
            f"layers, {fc}, {env.action_mapping} actions (layer sparsity up to "
            f"{env.s_max:.4g})")


WEIGHT = register(Granularity(
    name="weight", env_class=PruningEnv, check_prunable=check_prunable, build_policy=policy,
    entries=layer_entries, validate=validate_layers, pruned_copy=masked_copy, summary=summary,
    keeps_architecture=True, unit="params", only_settings=WEIGHT_ONLY, proxy="fast",
    reward="loss", proxies=("plain", "fast"), artifact="sparse file",
    export_hint="rlprune export-model {run} --out model.rlprune --quantize int8",
    speed_note="weight sparsity keeps every layer's shape, so its zeros do not speed up dense "
               "kernels; --granularity channel removes channels for real"))
