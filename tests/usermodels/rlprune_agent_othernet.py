"""A user model with other layer names and shapes than the tiny net."""
import torch
from torch import nn


class Other(nn.Module):
    """Two convs and a head, other names and shapes than the tiny net."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.conv_b = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        return self.head(self.pool(x).flatten(1))


def make(num_classes=10, in_channels=1, image_size=28):
    return Other(num_classes, in_channels, image_size)
