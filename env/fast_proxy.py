"""The proxy evaluation made fast for inference, computing what the plain path computes.

The plain path (`evaluate.proxy_score`) recalibrates the working model's BatchNorm statistics,
scores it on the val split and puts the statistics back. `FastProxy` does the same on a
private copy of the working model, laid out for the CPU's (and cuDNN's) fastest kernels:

- `channels_last` memory format for the copy and its inputs: the convolutions run without
  layout reorders, and max pooling in that format is several times faster;
- every BatchNorm that follows a convolution folded into it for scoring (after the
  recalibration, with PyTorch's `fuse_conv_bn_weights`): one pass less over every activation;
- the val images held in that layout on the device, scored in batches of `batch_size`,
  several batches side by side on the CPU's threads (`ProxyEvaluator`);
- in channel mode (`slim`), the copy is rebuilt every call with the masked channels removed
  for real (Torch-Pruning), so they cost nothing: building it costs about 25 ms on vgg-mini,
  and from 0.3 of the FLOPs removed on it is faster than the masked copy (docs/benchmarks.md).

Otherwise each call syncs the copy from the working model (its masked weights and dense
BatchNorm statistics), so the working model is never touched. The copy computes the same
function in another order of floating-point operations: scores move by rounding only (tested
against the plain path), and the same allocation always gets the same score.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from rlprune.env.evaluate import ProxyEvaluator, recalibrate_bn
from rlprune.models.splits import Split

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable_pairs(graph: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    """(convolution node, BatchNorm node) where the BatchNorm's only input is the convolution,
    the convolution feeds nothing else, each layer is called once (a shared one is not folded)
    and the BatchNorm uses running statistics in eval."""
    modules = dict(graph.named_modules())
    calls = Counter(n.target for n in graph.graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(modules.get(node.target), BATCHNORMS) and calls[node.target] == 1
                and modules[node.target].track_running_stats
                and isinstance(source, fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), CONVS) and calls[source.target] == 1
                and len(source.users) == 1 and len(node.args) == 1 and not node.kwargs):
            pairs.append((source, node))
    return pairs


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """The weight and bias of `conv` followed by `bn` (eval mode) as one convolution."""
    return fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                bn.eps, bn.weight, bn.bias)


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # user models fail to trace in many ways; they run unfolded
        return None


class FoldedBatchNorm:
    """A graph of `model` in which each BatchNorm fed only by a convolution is gone, and that
    convolution is replaced by a copy whose weights `refresh()` sets to the pair's fold.

    `module` is what to run: the folded graph, or `model` itself where it cannot be traced
    (`torch.fx` follows no data-dependent control flow) or has nothing to fold. The graph
    shares every other layer with `model`, and reads the pairs' weights and statistics from it.
    `fold_into(other)` folds a disposable model with `model`'s layer names (a slimmed copy)
    in place, by the same graph.
    """

    def __init__(self, model: nn.Module, *, fold: bool = True):
        self.pairs: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # (folded, conv, bn)
        self.names: list[tuple[str, str]] = []  # (conv, bn) of each pair
        self.module = model
        self._graph: fx.Graph | None = None  # BatchNorms gone, convolutions in place
        traced = _trace(model) if fold else None
        if traced is None:
            return
        modules = dict(traced.named_modules())
        for source, node in _foldable_pairs(traced):
            conv, bn = modules[source.target], modules[node.target]
            folded = copy.deepcopy(conv).requires_grad_(False)
            folded.bias = nn.Parameter(torch.zeros_like(bn.running_mean, dtype=conv.weight.dtype),
                                       requires_grad=False)
            name = f"_folded_{len(self.pairs)}"  # at the graph's root: `model` is not changed
            traced.add_submodule(name, folded)
            self.names.append((source.target, node.target))
            source.target = name
            node.replace_all_uses_with(source)
            traced.graph.erase_node(node)
            self.pairs.append((folded, conv, bn))
        if self.pairs:
            traced.recompile()
            self.module = traced.eval()
            self._graph = copy.deepcopy(traced.graph)
            back = {f"_folded_{i}": conv for i, (conv, _) in enumerate(self.names)}
            for node in self._graph.nodes:
                if node.op == "call_module" and node.target in back:
                    node.target = back[node.target]

    @torch.no_grad()
    def refresh(self) -> None:
        """Set every folded convolution from its pair's current weights and statistics."""
        for folded, conv, bn in self.pairs:
            weight, bias = _fold(conv, bn)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)

    @torch.no_grad()
    def fold_into(self, other: nn.Module) -> nn.Module:
        """`other` (same layer names as the model, any widths) with each pair folded in place
        from its current statistics; what to run (`other` itself if nothing folds)."""
        if self._graph is None:
            return other
        for conv_name, bn_name in self.names:
            conv = other.get_submodule(conv_name)
            weight, bias = _fold(conv, other.get_submodule(bn_name))
            conv.weight, conv.bias = weight.requires_grad_(False), bias.requires_grad_(False)
        return fx.GraphModule(other, self._graph).eval()


class FastProxy:
    """`proxy_score` of a working model, computed on a fast private copy (module docstring).

    :param model: the working model (read on every call, never written)
    :param val: the split to score on
    :param device: where the copy and the val images live
    :param batch_size: images per forward pass of the scoring
    :param threads: CPU threads that score val batches side by side (`ProxyEvaluator`)
    :param slim: if given, builds each call's copy instead: the working model with its masked
        channels removed for real (channel mode), so they cost nothing
    :param channels_last: the layout above (False: the model's own; for measuring each step)
    :param fold_bn: fold BatchNorm into convolutions (False: for measuring each step)
    """

    def __init__(self, model: nn.Module, val: Split, device: torch.device | str,
                 batch_size: int, *, threads: int = 1,
                 slim: Callable[[], nn.Module] | None = None, channels_last: bool = True,
                 fold_bn: bool = True):
        self.format = (torch.channels_last if channels_last and val.x.dim() == 4
                       else torch.contiguous_format)
        self.evaluator = ProxyEvaluator(val, device, batch_size, memory_format=self.format,
                                        threads=threads)
        self.slim = slim
        self.copy = self._prepare(copy.deepcopy(model))  # with slim: only to trace
        self.folds = FoldedBatchNorm(self.copy, fold=fold_bn)
        if slim is None:
            live, mine = model.state_dict(keep_vars=True), self.copy.state_dict(keep_vars=True)
            self._sync = [(live[k], mine[k]) for k in live]
        else:
            self.copy = None

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
        else:
            net = self.copy
            for source, target in self._sync:
                target.copy_(source)
        if batches and calibration is not None:
            recalibrate_bn(net, calibration, batches, batch_size, rng, memory_format=self.format)
        if self.slim is not None:
            return self.evaluator.score(self.folds.fold_into(net))
        self.folds.refresh()
        return self.evaluator.score(self.folds.module)
