"""What several studies share; not a study of its own (the scripts beside it import it: Python
puts this folder on the path when it runs a script in it).

Only the public `rlprune` and torch/numpy: the job's settings read from `key=value` arguments,
the search's environment, a policy pruned and fine-tuned as a job finalizes it, and small
measurements in plain torch (accuracy and cross-entropy, BatchNorm recalibration, a few masked
SGD steps, latency, Spearman's rank correlation).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import rlprune

RENAMED = {"checkpoint": "weights"}  # the old spelling, in commands the docs quote


def settings(pairs: list[str]) -> dict:
    """`key=value` arguments as `SearchConfig` settings, each value in its field's type."""
    types = {f.name: str(f.type) for f in dataclasses.fields(rlprune.SearchConfig)}
    out = {}
    for key, value in (p.split("=", 1) for p in pairs):
        key = RENAMED.get(key, key)
        if key not in types:
            raise SystemExit(f"unknown setting {key}; the settings are {', '.join(types)}")
        out[key] = _typed(value, types[key])
    return out


def _typed(value: str, kind: str):
    if kind == "bool":
        return value.lower() == "true"
    if kind.startswith("tuple["):
        item = int if kind.startswith("tuple[int") else str
        return tuple(item(v) for v in value.split(","))
    for name, cast in (("int", int), ("float", float)):
        if kind.split(" | ")[0] == name:
            try:
                return cast(value)
            except ValueError:
                if kind == name:
                    raise
    return value  # str, or `auto` for a number that may be `auto`


def config_from(pairs: list[str]) -> rlprune.SearchConfig:
    """The studies' config: on the CPU (where they ran), no checkpoints, `pairs` applied."""
    config = rlprune.SearchConfig(checkpoint_every=10_000, device="cpu")
    config = dataclasses.replace(config, **settings(pairs))
    config.validate()
    return config


def search_env(config: rlprune.SearchConfig, dense, **changes):
    """The environment a search with `config` plays on (`changes`: other env settings)."""
    env_config = dataclasses.replace(config.env_config(), **changes)
    cls = rlprune.ChannelPruningEnv if config.granularity == "channel" else rlprune.PruningEnv
    return cls(dense.model, dense.data.val, dense.input_shape, env_config,
               calibration=dense.data.train, device="cpu")


@dataclass
class Part:
    """Images and labels, as a split of `rlprune.Data` holds them (`x`, `y`)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def baseline_sparsities(method: str, env) -> dict[str, float]:
    """Every layer's sparsity under a baseline on `env`'s exact budget (FC rule included)."""
    return env.sparsities(env.baseline_counts(method))


@dataclass
class Finalized:
    model: nn.Module  # after fine-tuning (the pruned model where epochs is 0)
    pruned_accuracy: float  # test, pruned, BatchNorm recalibrated, before fine-tuning
    finetuned_accuracy: float  # test, after fine-tuning


def finalize_with(config: rlprune.SearchConfig, dense, policy: dict, *,
                  epochs: int | None = None, seed: int | None = None) -> Finalized:
    """`rlprune.apply` with a job's fine-tune (budget, learning rate, seed), as a job finalizes
    its policy (BatchNorm re-estimated on one train batch of 128 drawn by the seed: the
    defaults); `epochs` and `seed` override the job's."""
    epochs = config.finetune_epochs if epochs is None else epochs
    seed = config.seed if seed is None else seed
    pruned = rlprune.apply(policy, dense.model, dense.data, 0, seed=seed)
    before = accuracy(pruned, dense.data.test)
    if epochs == 0:
        return Finalized(pruned, before, before)
    tuned = rlprune.apply(policy, dense.model, dense.data, epochs, seed=seed,
                          lr=config.finetune_lr)
    return Finalized(tuned, before, accuracy(tuned, dense.data.test))


@torch.inference_mode()
def score(model: nn.Module, split, batch_size: int = 2048) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of `model` on a split (the `acc` and `loss`
    rewards' measures)."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(split.y), batch_size):
        logits, y = model(split.x[i:i + batch_size]), split.y[i:i + batch_size]
        correct += int((logits.argmax(1) == y).sum())
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum").double())
    return correct / len(split.y), loss / len(split.y)


def accuracy(model: nn.Module, split) -> float:
    return score(model, split)[0]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split, batches: int, batch_size: int,
                   rng: np.random.Generator) -> None:
    """Re-estimate every BatchNorm's running statistics on `batches` random batches of the
    split (a plain average), as the search does before it scores an allocation."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the batches
        bn.train()
    for _ in range(batches):
        idx = torch.from_numpy(rng.choice(len(split.y), size=min(batch_size, len(split.y))))
        model(split.x[idx])
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()


def sgd_steps(model: nn.Module, split, *, lr: float, seed: int = 0, batch_size: int = 128,
              hold_zeros: bool = True) -> nn.Module:
    """One pass over `split` in place, as rlprune fine-tunes (SGD with Nesterov momentum 0.9,
    weight decay 5e-4, one-cycle schedule) but without augmentation; with `hold_zeros`, zero
    weights stay zero (a weight-pruned model's masks held)."""
    masks = {p: p != 0 for p in model.parameters() if p.dim() > 1} if hold_zeros else {}
    gen = torch.Generator().manual_seed(seed)
    steps = max(1, -(-len(split.y) // batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    order = torch.randperm(len(split.y), generator=gen)
    model.train()
    for i in range(steps):
        idx = order[i * batch_size:(i + 1) * batch_size]
        loss = nn.functional.cross_entropy(model(split.x[idx]), split.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p, mask in masks.items():
                p.mul_(mask)
    return model.eval()


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int, *,
               warmup: int = 3, repeats: int = 20, budget_s: float = 2.0) -> float:
    """Median wall time of one CPU forward pass after warm-up (at most `repeats` passes, fewer
    where they would take more than `budget_s`, at least 5), as rlprune times its models.
    `model` is in eval mode already (an exported program cannot be switched)."""
    x = torch.randn(batch, *input_shape)
    for _ in range(warmup):
        model(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def spearman(a, b) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan where one side is
    constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties: their mean rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def pruned_copy(dense, policy: dict) -> nn.Module:
    """`policy` applied to a copy of the dense model, BatchNorm statistics as they were."""
    return rlprune.apply(policy, dense.model, input_shape=dense.input_shape)


SOURCE = ("model", "dataset", "weights", "data_dir", "download")


def search_settings(config: rlprune.SearchConfig) -> dict:
    """`config`'s settings for `rlprune.search(model, data, target, **settings)`: those that
    differ from the defaults, less the source of the model and data (given as objects) and
    the target."""
    default = rlprune.SearchConfig().to_json()
    return {k: v for k, v in config.to_json().items()
            if k not in (*SOURCE, "target") and v != default[k]}
