"""One split of a dataset as two in-memory tensors, made from whatever the user holds.

A search scores hundreds of allocations on the same images, so every split lives in memory
as `x` (float32, N x C x H x W) and `y` (int64 class indices). `to_split` reads a torch
`Dataset`, a `DataLoader` or an `(x, y)` pair into that form once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from rlprune.models.errors import UserError

READ_BATCH = 512


@dataclass
class Split:
    x: torch.Tensor  # float32, N x C x H x W, normalised
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise UserError(f"{what} is a {type(value).__name__}, not a tensor; give the Dataset a "
                    "transform that returns tensors (e.g. torchvision.transforms.ToTensor())")


def _pair(batch: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        return _tensor(batch[0], f"{what}'s inputs"), _tensor(batch[1], f"{what}'s labels")
    raise UserError(f"{what} yields {type(batch).__name__}, not (inputs, labels) pairs")


def _read_loader(loader: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    try:
        for batch in loader:
            x, y = _pair(batch, what)
            xs.append(x)
            ys.append(y.reshape(-1) if y.dim() else y.reshape(1))
    except UserError:
        raise
    except Exception as exc:  # a user's dataset can fail in any way
        raise UserError(f"{what} could not be read ({type(exc).__name__}: {exc})") from None
    if not xs:
        raise UserError(f"{what} is empty")
    return torch.cat(xs), torch.cat(ys)


def to_split(source: Any, what: str = "split") -> Split:
    """`source` as a Split: a Split, an `(x, y)` pair of tensors or arrays, a torch Dataset of
    (input, label) items, or a DataLoader (read once, in its own order).

    Inputs become float32 (N x H x W gains a channel axis); labels must be class indices."""
    if isinstance(source, Split):
        x, y = source.x, source.y
    elif isinstance(source, DataLoader):
        x, y = _read_loader(source, what)
    elif isinstance(source, TorchDataset):
        x, y = _read_loader(DataLoader(source, batch_size=READ_BATCH, shuffle=False), what)
    elif isinstance(source, tuple | list) and len(source) == 2:
        x, y = _tensor(source[0], f"{what}'s inputs"), _tensor(source[1], f"{what}'s labels")
    else:
        raise UserError(f"{what} is a {type(source).__name__}; give a torch Dataset, a "
                        "DataLoader or an (x, y) pair of tensors")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise UserError(f"{what}: inputs of shape {tuple(x.shape)}; expected images, "
                        "N x C x H x W")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        raise UserError(f"{what}: labels must be integer class indices (one per input), got "
                        f"{y.dtype} of shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise UserError(f"{what}: {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise UserError(f"{what} is empty")
    if int(y.min()) < 0:
        raise UserError(f"{what}: labels must be class indices >= 0, got {int(y.min())}")
    return Split(x.float().contiguous(), y.long().contiguous())
