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


# -- factories that take down the process that calls them (the service must survive them) ----
def aborts():
    import os

    os.abort()


def exits():
    import sys

    sys.exit(3)


def hangs():
    import time

    time.sleep(3600)


def segfaults():
    import ctypes

    ctypes.string_at(0)


class AbortsWhenRun(nn.Module):
    """Builds and traces fine (one image); a batch of more aborts the process, so only a
    job's worker meets it."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        if x.shape[0] > 1:
            import os

            os.abort()
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def aborts_when_run(in_channels=1, num_classes=10):
    return AbortsWhenRun(in_channels, num_classes)


def lone_linear(num_classes=10, in_channels=1, image_size=28):
    """A single Linear layer: under the FC rule the agent has nothing to act on."""
    h, w = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * h * w, num_classes))
