"""A user's own project, as the Python API and `--dataset module:factory` see it: a small CNN
of their own and their own DataLoaders over images that are not square (scikit-learn's 8x8
digits, padded to 8x12)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = 10
SHAPE = (1, 8, 12)


class DigitNet(nn.Module):
    def __init__(self, num_classes: int = CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * 4 * 6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def make(num_classes: int = CLASSES, in_channels: int = 1, image_size=None) -> DigitNet:
    return DigitNet(num_classes)


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = nn.functional.pad(x, (2, 2))  # 8 x 12: not square
    return (x - 0.3) / 0.4, torch.tensor(digits.target)


def loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader, DataLoader]:
    """train / val / test DataLoaders (1,197 / 300 / 300 images, a fixed order)."""
    x, y = tensors()
    cuts = ((0, 1197), (1197, 1497), (1497, 1797))
    return tuple(DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=batch_size)
                 for a, b in cuts)


def data():
    """`--dataset userproject:data`: the factory returns (train, val, test)."""
    return loaders()


def trained(epochs: int = 3, seed: int = 0) -> DigitNet:
    """The user's trained model: a few epochs of Adam, seeded."""
    torch.manual_seed(seed)
    model = make()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    train, _, _ = loaders()
    for _ in range(epochs):
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
