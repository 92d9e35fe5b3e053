"""Networks by name: a plain dict of factories, plus `package.module:factory` for user models.

Every factory takes the data's shape (`in_channels`, `image_size`: a side, or (height, width)
for images that are not square) and `num_classes`, so one name works on MNIST-shaped and
CIFAR-shaped data alike.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from rlprune.models.errors import UserError
from rlprune.models.imports import call_user, import_callable

Size = int | tuple[int, int]


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _sides(image_size: Size) -> tuple[int, int]:
    return ((image_size, image_size) if isinstance(image_size, int)
            else cast(tuple[int, int], tuple(image_size)))


class LeNet5(nn.Module):
    """Caffe LeNet-5 (Han et al. 2015): conv 20 and 50 5x5, FC 800->500->classes on 28x28."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: Size = 28):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 20, 5)
        self.c2 = nn.Conv2d(20, 50, 5)
        self.pool = nn.MaxPool2d(2)
        h, w = (_conv_out(_conv_out(side, 5) // 2, 5) // 2 for side in _sides(image_size))
        self.f1 = nn.Linear(50 * h * w, 500)
        self.f2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.c1(x)))
        x = self.pool(torch.relu(self.c2(x)))
        return self.f2(torch.relu(self.f1(x.flatten(1))))


class LeNet300(nn.Module):
    """LeNet-300-100: an MLP 784-300-100-classes (no convolutions: use --fc-rule agent)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: Size = 28):
        super().__init__()
        h, w = _sides(image_size)
        self.f1 = nn.Linear(in_channels * h * w, 300)
        self.f2 = nn.Linear(300, 100)
        self.f3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.f1(x.flatten(1)))
        return self.f3(torch.relu(self.f2(x)))


def _vgg_features(cfg: list, in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.BatchNorm2d(item),
                       nn.ReLU(inplace=True)]
            in_channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG-style net with BatchNorm: conv stack, global average pool, FC classifier."""

    def __init__(self, cfg: list, classifier: tuple[int, ...], num_classes: int = 10,
                 in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.features = _vgg_features(cfg, in_channels)
        widths = [next(c for c in reversed(cfg) if c != "M"), *classifier]
        head: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            head += [nn.Linear(a, b), nn.ReLU(inplace=True)]
            if dropout:
                head.append(nn.Dropout(dropout))
        head.append(nn.Linear(widths[-1], num_classes))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


VGG_MINI_CFG = [16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128]
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


def vgg_mini(num_classes: int = 10, in_channels: int = 1, image_size: Size = 28) -> VGG:
    """8 conv layers (16-16-32-32-64-64-128-128, BN) and 2 FC (128->128->classes)."""
    return VGG(VGG_MINI_CFG, (128,), num_classes, in_channels)


def vgg16(num_classes: int = 10, in_channels: int = 3, image_size: Size = 32,
          classifier: tuple[int, ...] = (4096, 4096)) -> VGG:
    """CIFAR VGG16-BN; the reference classifier is 512->4096->4096->classes."""
    return VGG(VGG16_CFG, classifier, num_classes, in_channels, dropout=0.5)


class _BasicBlock(nn.Module):
    """CIFAR ResNet block (He et al. 2016) with the "option B" shortcut: identity, or a 1x1
    convolution + BatchNorm where the shape changes. Option A's zero-padded shortcut ties
    channels to fixed positions that channel pruning cannot follow; option B's projection
    is an ordinary layer the dependency graph prunes like any other."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def resnet56(num_classes: int = 10, in_channels: int = 3, image_size: Size = 32) -> CifarResNet:
    return CifarResNet(56, num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3, image_size: Size = 224) -> nn.Module:
    from torchvision.models import resnet50 as tv_resnet50

    model = tv_resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


Factory = Callable[..., nn.Module]

MODELS: dict[str, Factory] = {
    "lenet5": LeNet5,
    "lenet300": LeNet300,
    "vgg-mini": vgg_mini,
    "vgg16": vgg16,
    "resnet56": resnet56,
    "resnet50": resnet50,
}

# The dataset a model is inspected on when none is named.
DEFAULT_DATASET: dict[str, str] = {
    "lenet5": "mnist5k", "lenet300": "mnist5k", "vgg-mini": "mnist5k",
    "vgg16": "cifar10", "resnet56": "cifar10", "resnet50": "imagenet-shape",
}


def build_model(name: str, num_classes: int = 10, in_channels: int = 1,
                image_size: Size = 28) -> nn.Module:
    """A fresh, randomly initialised network; `name` is a registry key or `module:factory`.

    A user factory gets the keyword arguments its signature accepts among
    num_classes, in_channels and image_size.
    """
    if ":" in name:
        factory = import_callable(name, "model")
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)} "
                        "or give package.module:factory")
    offered = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    try:
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    model = call_user(name, "model", factory, **kwargs) if ":" in name else factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r}: the factory returned {type(model).__name__}, "
                        "not a torch.nn.Module")
    return model


def arch_fingerprint(model: nn.Module) -> str:
    """sha256 over parameter names and shapes: equal for the same architecture, any weights."""
    text = "\n".join(f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters())
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """sha256 of the weights' values (and names): a retrained model is another problem."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
