"""The proxy evaluation made fast for inference, computing what the plain path computes.

The plain path (`evaluate.proxy_score`) recalibrates the working model's BatchNorm statistics,
scores it on the val split and puts the statistics back. `FastProxy` does the same on a
private copy of the working model, laid out for the CPU's (and cuDNN's) fastest kernels:

- `channels_last` memory format for the copy and its inputs: the convolutions run without
  layout reorders, and max pooling in that format is several times faster;
- every BatchNorm that follows a convolution folded into it for scoring (after the
  recalibration, with PyTorch's `fuse_conv_bn_weights`): one pass less over every activation;
- the val images held in that layout on the device, scored in batches of `batch_size`.

Each call syncs the copy from the working model (its masked weights and dense BatchNorm
statistics), so the working model is never touched. The copy computes the same function in
another order of floating-point operations: scores move by rounding only (tested against the
plain path), and the same allocation always gets the same score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from rlprune.env.evaluate import ProxyEvaluator, recalibrate_bn
from rlprune.models.splits import Split

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class FoldedBatchNorm:
    """A graph of `model` in which each BatchNorm fed only by a convolution is gone, and that
    convolution is replaced by a copy whose weights `refresh()` sets to the pair's fold.

    `module` is what to run: the folded graph, or `model` itself where it cannot be traced
    (`torch.fx` follows no data-dependent control flow) or has nothing to fold. The graph
    shares every other layer with `model`, and reads the pairs' weights and statistics from it.
    """

    def __init__(self, model: nn.Module):
        self.pairs: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # (folded, conv, bn)
        self.module = model
        try:
            graph = fx.symbolic_trace(model)
        except Exception:  # user models fail to trace in many ways; they run unfolded
            return
        modules = dict(graph.named_modules())
        for node in list(graph.graph.nodes):
            source = node.args[0] if node.op == "call_module" and node.args else None
            if not (isinstance(modules.get(node.target), BATCHNORMS)
                    and isinstance(source, fx.Node) and source.op == "call_module"
                    and isinstance(modules.get(source.target), CONVS)
                    and len(source.users) == 1 and len(node.args) == 1 and not node.kwargs):
                continue
            conv, bn = modules[source.target], modules[node.target]
            if not bn.track_running_stats:  # it normalises with batch statistics in eval too
                continue
            folded = copy.deepcopy(conv)
            folded.bias = nn.Parameter(torch.zeros_like(bn.running_mean, dtype=conv.weight.dtype))
            name = f"_folded_{len(self.pairs)}"  # at the graph's root: `model` is not changed
            graph.add_submodule(name, folded.requires_grad_(False))
            source.target = name
            node.replace_all_uses_with(source)
            graph.graph.erase_node(node)
            self.pairs.append((folded, conv, bn))
        if self.pairs:
            graph.recompile()
            self.module = graph.eval()

    @torch.no_grad()
    def refresh(self) -> None:
        """Set every folded convolution from its pair's current weights and statistics."""
        for folded, conv, bn in self.pairs:
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                                bn.running_var, bn.eps, bn.weight, bn.bias)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)


class FastProxy:
    """`proxy_score` of a working model, computed on a fast private copy (module docstring).

    :param model: the working model (read on every call, never written)
    :param val: the split to score on
    :param device: where the copy and the val images live
    :param batch_size: images per forward pass of the scoring
    :param threads: CPU threads that score val batches side by side (`ProxyEvaluator`)
    :param slim: if given, builds each call's copy instead: the working model with its masked
        channels removed for real (channel mode), so they cost nothing
    """

    def __init__(self, model: nn.Module, val: Split, device: torch.device | str,
                 batch_size: int, *, threads: int = 1,
                 slim: Callable[[], nn.Module] | None = None):
        self.format = torch.channels_last if val.x.dim() == 4 else torch.contiguous_format
        self.evaluator = ProxyEvaluator(val, device, batch_size, memory_format=self.format,
                                        threads=threads)
        self.slim = slim
        if slim is None:
            self.copy = self._prepare(copy.deepcopy(model))
            self.folds = FoldedBatchNorm(self.copy)
            live, mine = model.state_dict(keep_vars=True), self.copy.state_dict(keep_vars=True)
            self._sync = [(live[k], mine[k]) for k in live]

    def _prepare(self, model: nn.Module) -> nn.Module:
        return model.eval().to(memory_format=self.format).requires_grad_(False)

    @torch.no_grad()
    def score(self, calibration: Split | None, *, batches: int, batch_size: int,
              rng: np.random.Generator) -> tuple[float, float]:
        """Val accuracy and cross-entropy of the working model as it is now (BatchNorm
        statistics re-estimated first on `batches` train batches drawn with `rng`, as the
        plain path draws them)."""
        if self.slim is not None:
            with torch.enable_grad():  # Torch-Pruning traces the model through autograd
                net = self._prepare(self.slim())
            folds = FoldedBatchNorm(net)
        else:
            net, folds = self.copy, self.folds
            for source, target in self._sync:
                target.copy_(source)
        if batches and calibration is not None:
            recalibrate_bn(net, calibration, batches, batch_size, rng, memory_format=self.format)
        folds.refresh()
        return self.evaluator.score(folds.module)
