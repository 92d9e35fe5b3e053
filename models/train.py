"""Dense pre-training, masked fine-tuning (any model), evaluation, and weights files.

Nothing here prints: progress goes to an optional `on_epoch` callback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlprune.models.errors import SettingError, UserError
from rlprune.models.registry import arch_fingerprint
from rlprune.models.splits import Split

WEIGHTS_FORMAT = "rlprune.weights/1"
PROGRAM_FORMAT = "rlprune.program/1"  # a channel-pruned network, as a torch.export program


@dataclass
class TrainConfig:
    epochs: int = 10
    """Passes over the train split."""
    batch_size: int = 128
    lr: float = 0.05
    """Peak learning rate of the one-cycle schedule (SGD, Nesterov momentum 0.9)."""
    weight_decay: float = 5e-4
    shift: int = 2
    """Random translation of up to this many pixels per image (0 turns augmentation off)."""
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many SGD steps (the one-cycle schedule spans them), if given."""


def _augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by a random whole number of pixels; flip colour images left-right."""
    n, _, h, w = x.shape
    d = torch.randint(-shift, shift + 1, (n, 2), generator=gen).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 2 * d[:, 0] / w, 2 * d[:, 1] / h
    if x.shape[1] == 3:
        flip = torch.rand(n, generator=gen) < 0.5
        theta[flip, 0, 0] = -1.0
    grid = nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="border",
                                     align_corners=False)


def train(model: nn.Module, data: Split, config: TrainConfig,
          on_epoch: Callable[[int, float], None] | None = None) -> None:
    """Train in place with SGD and a one-cycle schedule.

    Pruning masks registered with `torch.nn.utils.prune` hold throughout: the forward pass
    multiplies by the mask, so masked weights stay exactly zero whatever the optimizer does.
    """
    gen = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    steps = max(1, -(-len(data) // config.batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                          weight_decay=config.weight_decay)
    left = config.epochs * steps if config.max_steps is None else min(
        config.max_steps, config.epochs * steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=left)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(steps):
            if left == 0:
                break
            left -= 1
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            x, y = data.x[idx].to(device), data.y[idx].to(device)
            if config.shift:
                x = _augment(x, config.shift, gen)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if on_epoch:
            on_epoch(epoch, total / steps)
    model.eval()


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy in [0, 1]; `data` may already live on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size].to(device), data.y[i:i + batch_size].to(device)
        correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(1, len(data))


def save_weights(path: str | Path, model: nn.Module, meta: dict) -> None:
    """Weights plus metadata, written to a temporary name and renamed (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": WEIGHTS_FORMAT, "arch_fingerprint": arch_fingerprint(model), **meta}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save({"meta": meta, "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_weights(path: str | Path) -> dict:
    """The weights file's {"meta", "state_dict"}; refuses files that hold no state_dict."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"weights file {path} is a folder; give the .pt file")
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file can fail in many ways
        raise UserError(f"weights file {path} cannot be read ({type(exc).__name__})") from None
    if isinstance(blob, dict) and "state_dict" not in blob and all(
            isinstance(v, torch.Tensor) for v in blob.values()):
        blob = {"meta": {}, "state_dict": blob}  # a bare state_dict from torch.save
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise UserError(f"weights file {path} holds no state_dict")
    return blob


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load a weights file into `model`, naming the keys that do not fit; returns its metadata."""
    blob = read_weights(path)
    load_state(model, blob["state_dict"], f"weights file {path}")
    return blob.get("meta", {})


def load_state(model: nn.Module, state: dict, where: str) -> None:
    """Load `state` into `model`, naming the keys that do not fit (`where`: whose they are)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise UserError(f"{where} does not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def resolve_device(name: str) -> str:
    """`auto` → cuda when torch sees a GPU, else cpu; refuses cuda without one."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", "cuda asked for, but torch sees no CUDA device; use "
                           "`device` cpu")
    return name


def save_program(path: str | Path, model: nn.Module, input_shape: tuple[int, ...],
                 meta: dict) -> None:
    """The model as a `torch.export` program (any batch size) with `meta` inside: it loads
    with plain torch, `torch.export.load(path).module()`, no rlprune needed. Written to a
    temporary name and renamed."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu()
    model.eval()  # (an int8 graph's eval() switches in place and returns None)
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    meta = {"format": PROGRAM_FORMAT, "arch_fingerprint": arch_fingerprint(model), **meta}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object: torch.export takes any name then
            torch.export.save(program, fh, extra_files={"rlprune.json": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fixed_mode(module: nn.Module) -> nn.Module:
    """An exported graph is fixed in the mode it was exported in (eval): make `train()` and
    `eval()` no-ops on it, as on any module, instead of the errors torch.export raises."""
    def keep(self, mode: bool = True) -> nn.Module:
        return self

    module.train = keep.__get__(module)  # type: ignore[method-assign]
    module.eval = keep.__get__(module)  # type: ignore[method-assign]
    for m in module.modules():
        m.training = False
    return module


def load_program(path: str | Path) -> tuple[nn.Module, dict]:
    """A `save_program` file: the runnable module and its metadata."""
    import json

    extra = {"rlprune.json": ""}

    def read():
        with open(path, "rb") as fh:
            return torch.export.load(fh, extra_files=extra)

    try:
        try:
            program = read()
        except Exception:  # an int8 program calls torchao's operators: register them, retry
            from rlprune.models.quantize import register_int8_ops

            register_int8_ops()
            program = read()
    except Exception as exc:  # a foreign or damaged file can fail in many ways
        raise UserError(f"{path} is not a saved program ({type(exc).__name__})") from None
    return fixed_mode(program.module()), json.loads(extra["rlprune.json"] or "{}")
