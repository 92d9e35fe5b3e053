"""Proxy accuracy: the val split held as tensors on the device, scored in large batches; and
the episode's reward from it (shared by the weight and the channel environment)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from rlprune.models.data import Split


class ProxyEvaluator:
    """The val split on the device, scored in batches of `batch_size`.

    :param memory_format: the images' layout (`torch.channels_last` for a model in that format)
    :param threads: on the CPU, score that many batches at once, each on one thread (small
        convolutions use two cores better side by side than split within each layer); the
        batches and the order their sums are added in are the same for any thread count
    """

    def __init__(self, val: Split, device: torch.device | str, batch_size: int = 2048, *,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 threads: int = 1):
        self.x = val.x.to(device, memory_format=memory_format)
        self.y = val.y.to(device)
        self.batch_size = batch_size
        self.threads = threads if self.x.device.type == "cpu" else 1

    def accuracy(self, model: nn.Module) -> float:
        return self.score(model)[0]

    def score(self, model: nn.Module) -> tuple[float, float]:
        """Top-1 accuracy and mean cross-entropy on the val split, from the same forward pass."""
        model.eval()
        starts = range(0, len(self.y), self.batch_size)
        if self.threads > 1 and len(starts) > 1:
            before = torch.get_num_threads()
            torch.set_num_threads(1)  # process-wide; put back below
            try:
                with ThreadPoolExecutor(self.threads) as pool:
                    sums = list(pool.map(lambda i: self._batch(model, i), starts))
            finally:
                torch.set_num_threads(before)
        else:
            sums = [self._batch(model, i) for i in starts]
        correct = sum(c for c, _ in sums)
        loss = math.fsum(lo for _, lo in sums)
        return correct / len(self.y), loss / len(self.y)

    @torch.inference_mode()
    def _batch(self, model: nn.Module, i: int) -> tuple[int, float]:
        """Correct predictions and summed cross-entropy of the batch starting at image i."""
        logits, y = model(self.x[i:i + self.batch_size]), self.y[i:i + self.batch_size]
        return (int((logits.argmax(1) == y).sum()),
                float(nn.functional.cross_entropy(logits, y, reduction="sum").double()))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Split, batches: int, batch_size: int,
                   rng: np.random.Generator, *,
                   memory_format: torch.memory_format = torch.contiguous_format) -> None:
    """Re-estimate every BatchNorm's running statistics on `batches` random batches of `data`.

    Pruning shifts activations, and stale statistics alone can drive a pruned net to chance.
    Only the BatchNorm layers run in train mode (no dropout); the model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    device = next(model.parameters()).device
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batches
        bn.train()
    for _ in range(batches):
        idx = torch.from_numpy(rng.choice(len(data), size=min(batch_size, len(data))))
        model(data.x[idx].to(device, memory_format=memory_format))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()


def bn_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm's running statistics (to put back after a recalibration)."""
    return {k: v.clone() for k, v in model.state_dict().items()
            if "running_" in k or "num_batches_tracked" in k}


def proxy_score(model: nn.Module, evaluator: ProxyEvaluator, calibration: Split | None, *,
                batches: int, batch_size: int, rng: np.random.Generator,
                dense_statistics: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Val accuracy and cross-entropy of `model` as it is now masked: BatchNorm statistics
    re-estimated first on `batches` train batches drawn with `rng` (if any), then put back to
    `dense_statistics`."""
    recalibrate = batches and calibration is not None
    if recalibrate:
        recalibrate_bn(model, calibration, batches, batch_size, rng)
    score = evaluator.score(model)
    if recalibrate:
        model.load_state_dict(dense_statistics, strict=False)
    return score


def reward_of(kind: str, accuracy: float, loss: float, cost: float) -> float:
    """`loss`: minus the cross-entropy; `acc`: the accuracy; `-err*log(...)`: AMC's
    -(1 - acc)·log(cost), with `cost` the pruned network's FLOPs or params."""
    if kind == "acc":
        return accuracy
    if kind == "loss":
        return -loss
    return -(1.0 - accuracy) * math.log(max(cost, 2))
