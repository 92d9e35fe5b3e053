"""The environment a config asks for: weight sparsity (`PruningEnv`) or channels
(`ChannelPruningEnv`)."""

from __future__ import annotations

import torch
from torch import nn

from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.config import EnvConfig
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.splits import Split


def make_env(model: nn.Module, val: Split, input_shape: tuple[int, int, int],
             config: EnvConfig, *, calibration: Split | None = None,
             device: str | torch.device = "cpu") -> PruningEnv | ChannelPruningEnv:
    cls = ChannelPruningEnv if config.granularity == "channel" else PruningEnv
    return cls(model, val, input_shape, config, calibration=calibration, device=device)


def check_prunable(model: nn.Module, input_shape: tuple[int, int, int],
                   config: EnvConfig) -> None:
    """Refuse, from the architecture alone (before any training), a model in which the agent
    would have nothing to act on: no agent layer in weight mode, no channel group in channel
    mode. The same refusals as the env's budget, only earlier."""
    if config.granularity == "channel":
        from rlprune.env.channel_budget import no_groups_error
        from rlprune.env.channels import ChannelGraph

        if not ChannelGraph(model, input_shape).groups:
            raise no_groups_error()
        return
    from rlprune.env.budget import no_agent_layers_error
    from rlprune.env.layers import describe

    if not describe(model, input_shape, config.fc_rule).owned_by("agent"):
        raise no_agent_layers_error()
