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
