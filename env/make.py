"""The environment a config asks for: its granularity's env class (`PruningEnv` for weight
sparsity, `ChannelPruningEnv` for channels, or a registered one)."""

from __future__ import annotations

import torch
from torch import nn

from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.config import EnvConfig
from rlprune.env.granularity import granularity_named
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.splits import Split


def make_env(model: nn.Module, val: Split, input_shape: tuple[int, int, int],
             config: EnvConfig, *, calibration: Split | None = None,
             device: str | torch.device = "cpu") -> PruningEnv | ChannelPruningEnv:
    cls = granularity_named(config.granularity).env_class
    return cls(model, val, input_shape, config, calibration=calibration, device=device)


def check_prunable(model: nn.Module, input_shape: tuple[int, int, int],
                   config: EnvConfig) -> None:
    """Refuse, from the architecture alone (before any training), a model in which the agent
    would have nothing to act on (no agent layer, no channel group): the same refusals as the
    env's budget, only earlier."""
    granularity_named(config.granularity).check_prunable(model, input_shape, config)
