"""The `channel` granularity: each agent step removes a fraction of one channel group's
channels (groups from Torch-Pruning's dependency graph), under a FLOPs or parameter budget;
the slim network is built for real at the end. Registered on import."""

from __future__ import annotations

from torch import nn

from rlprune.env.channel_budget import no_groups_error
from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.channels import ChannelGraph
from rlprune.env.config import CHANNEL_ONLY, EnvConfig
from rlprune.env.finalize import slim_copy
from rlprune.env.granularity import Granularity, register
from rlprune.env.policy import build_channel_policy, group_entries, validate_groups


def check_prunable(model: nn.Module, input_shape: tuple[int, int, int],
                   config: EnvConfig) -> None:
    """Refuse a model with no channel group (before any training)."""
    if not ChannelGraph(model, input_shape).groups:
        raise no_groups_error()


def policy(env: ChannelPruningEnv, sparsities: dict[str, float], *, config, **common) -> dict:
    """The channel policy of an allocation: per group, the root channels removed."""
    removed = env.removed_channels(sparsities)
    counts = [len(removed[g.name]) for g in env.graph.groups]
    return build_channel_policy(
        **common, target=config.target, budget=config.budget, criterion=config.criterion,
        groups=env.graph.groups, removed=removed, achieved=env.budget.achieved(counts),
        costs=env.costs(counts))


def summary(config, env: ChannelPruningEnv) -> str:
    return (f"target {config.target:g} of the {config.budget}, {len(env.agent_layers)} "
            f"channel groups (criterion {config.criterion}), {env.action_mapping} actions "
            f"(a group loses up to {env.s_max:.4g} of its channels"
            + (f", keeps a multiple of {env.round_to}" if env.round_to > 1 else "") + ")")


CHANNEL = register(Granularity(
    name="channel", env_class=ChannelPruningEnv, check_prunable=check_prunable,
    build_policy=policy, entries=group_entries, validate=validate_groups,
    pruned_copy=slim_copy, summary=summary, keeps_architecture=False, unit="channels",
    only_settings=CHANNEL_ONLY, proxy="slim", reward="acc", proxies=("plain", "fast", "slim"),
    artifact="slim file",
    export_hint="rlprune export-model {run} --out model.onnx --quantize int8"))
