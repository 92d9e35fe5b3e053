"""Small networks whose channel groups are known: a residual stream, a depthwise
convolution, and a concatenation (1 x 8 x 8 inputs, 4 classes)."""

import torch
from torch import nn


def _bn_init(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


class Residual(nn.Module):
    """stem -> two identity blocks on one stream (a group: stem, b1.c2, b2.c2 lose the same
    channels) -> a projection block -> head."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.ModuleDict({
                "c1": nn.Conv2d(8, 6, 3, padding=1, bias=False), "n1": nn.BatchNorm2d(6),
                "c2": nn.Conv2d(6, 8, 3, padding=1, bias=False), "n2": nn.BatchNorm2d(8)}))
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(12)
        self.proj = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.proj_bn = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        for b in self.blocks:
            y = torch.relu(b["n1"](b["c1"](x)))
            x = torch.relu(x + b["n2"](b["c2"](y)))
        x = torch.relu(self.down_bn(self.down(x)) + self.proj_bn(self.proj(x)))
        return self.head(x.mean((2, 3)))


class Depthwise(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.n1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.n2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 10, 1)
        self.fc = nn.Linear(10 * 16, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.n1(self.c1(x)))
        x = torch.relu(self.n2(self.dw(x)))
        x = nn.functional.max_pool2d(torch.relu(self.pw(x)), 2)
        return self.head(torch.relu(self.fc(x.flatten(1))))


class Concat(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.a = nn.Conv2d(1, 5, 3, padding=1)
        self.b = nn.Conv2d(1, 7, 3, padding=1)
        self.mix = nn.Conv2d(12, 6, 3, padding=1)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.head(torch.relu(self.mix(x)).mean((2, 3)))


def residual(seed: int = 0):
    torch.manual_seed(seed)
    return _bn_init(Residual(), seed)


def depthwise(seed: int = 0):
    torch.manual_seed(seed)
    return _bn_init(Depthwise(), seed)


def concat(seed: int = 0):
    torch.manual_seed(seed)
    return _bn_init(Concat(), seed)
