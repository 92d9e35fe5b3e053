"""User model factories that rlprune must refuse with one clear line."""

import torch
from torch import nn


class NoLayers(nn.Module):
    """Parameters, but no Conv2d or Linear: nothing to prune."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x.flatten(1)[:, :10] * self.scale)


class NoParameters(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


def no_layers():
    return NoLayers()


def no_params():
    return NoParameters()


def five_classes(in_channels=1):
    """Too few outputs for the data's 10 classes."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


def wrong_input():
    """Expects 3 channels: cannot take 1-channel images."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def raises():
    raise RuntimeError("the user's factory broke")


def not_a_module():
    return "a string"


def data_of_one_class():
    x = torch.randn(30, 1, 8, 8)
    y = torch.zeros(30, dtype=torch.long)
    return (x[:20], y[:20]), (x[20:25], y[20:25]), (x[25:], y[25:])


def data_not_three():
    return [1, 2]
