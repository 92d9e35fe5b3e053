"""The tests' user model: three small convs (two with BatchNorm) and one Linear, 1x28x28 in
(`--model rlprune_agent_tinynet:make`)."""
import torch
from torch import nn


class Net(nn.Module):
    """Three small convs (two with BatchNorm) and one Linear; 1x28x28 in."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.f1 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x)))
        x = torch.relu(self.c3(x))
        return self.f1(self.pool(x).flatten(1))


def make(num_classes=10, in_channels=1, image_size=28):
    return Net(num_classes, in_channels, image_size)
