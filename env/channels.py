"""Channel groups of a network, from Torch-Pruning's dependency graph: which channels must go
together, what each group costs, masking them in place, and removing them for real.

A group is the set of layers that must lose the same channels (a convolution and its
BatchNorm, every layer on a residual stream, a depthwise convolution and its input); its
"root" layer names it and indexes its channels. The network's last layer never loses its
outputs (they are the classes).

Costs (FLOPs as fvcore counts them, or parameters) are exact functions of how many channels
each group keeps: a convolution's or Linear's multiply-adds scale with the fraction of its
input and of its output channels kept, a depthwise convolution's and a BatchNorm's with the
fraction of their channels. Everything else (pooling, the input layer's image channels) is
a fixed cost.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from rlprune.models.errors import SettingError, UserError

with warnings.catch_warnings():  # fvcore's import trips torch.jit deprecation warnings
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

BUDGETS = ("flops", "params")
COSTED = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


class CostModel(Protocol):
    """A budget's cost as a function of each group's removed fraction."""

    def cost(self, removed: np.ndarray) -> float: ...


@dataclass
class ChannelGroup:
    """One step of a channel episode: the channels of `name` (and the layers coupled to it)."""

    name: str  # the root layer
    kind: str  # "conv" | "fc"
    channels: int
    layers: list[str]  # every layer the group touches, root first
    in_channels: int
    kernel: int
    stride: int
    fmap: int  # root output height x width (1 for fc)
    # (module name, rows of its weight/bias that the group owns, the root channel of each)
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    activation: str = ""  # the layer whose output carries the group's feature maps


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                     verbose=False)
    except Exception as exc:  # a model the tracer cannot follow fails in many ways
        raise SettingError("granularity", f"channel mode cannot trace the model "
                           f"({type(exc).__name__}: {exc}); use `granularity` weight",
                           lead=False) from None


class ChannelGraph:
    """The channel groups of `model` (forward order) and their cost model.

    :param model: the network (not modified; masks are written by `Masker` into a model
        whose layer names match)
    :param input_shape: (C, H, W) of one image
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        was_training = model.training
        model.eval()
        param = next(model.parameters())
        example = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
        try:
            self._build(model, example)
        finally:
            model.train(was_training)

    def _build(self, model: nn.Module, example: torch.Tensor) -> None:
        names = {m: n for n, m in model.named_modules()}
        modules = dict(model.named_modules())
        grouped = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups > 1
                   and not _depthwise(m)]
        if grouped:
            raise SettingError("granularity", f"channel mode supports plain and depthwise "
                               f"convolutions; {grouped[0]} has groups="
                               f"{modules[grouped[0]].groups}; use `granularity` weight",
                               lead=False)
        self.forward, self.fmaps, self.output_layer = _trace(model, example)
        output = modules[self.output_layer]
        graph = dependency_graph(model, example)
        self.groups: list[ChannelGroup] = []
        self._in: dict[str, list[tuple[int, int]]] = {}  # layer -> [(group, its channels)]
        self._out: dict[str, list[tuple[int, int]]] = {}
        counts = []
        for group in graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear],
                                          ignored_layers=[output]):
            root = group[0].dep.target.module
            full = graph.get_pruning_group(root, group[0].dep.handler,
                                           idxs=list(range(len(group[0].idxs))))
            g, c = self._describe(names[root], root, full, graph, names, modules)
            self.groups.append(g)
            counts.append(c)
        def first_run(i: int) -> int:  # a residual stream's group starts at its first layer
            return min(self.forward.get(n, len(self.forward)) for n in self.groups[i].layers)

        order = sorted(range(len(self.groups)), key=first_run)
        self.groups = [self.groups[i] for i in order]
        for gi, i in enumerate(order):
            for name, directions in counts[i].items():
                for direction, n in directions.items():
                    (self._out if direction == "out" else self._in).setdefault(
                        name, []).append((gi, n))
        self._costed = {n: m for n, m in modules.items() if isinstance(m, COSTED)}
        flops = _module_flops(model, example)
        self._flops = flops
        self.total = {"flops": float(flops[""]),
                      "params": float(sum(p.numel() for p in model.parameters()))}
        self._terms = {budget: self._cost_terms(budget) for budget in BUDGETS}
        self._models: dict[str, CostModel] = {}  # budgets added with add_cost

    def _describe(self, name: str, root: nn.Module, full, graph, names: dict,
                  modules: dict) -> tuple[ChannelGroup, dict]:
        """The group rooted at `name`, and how many of each layer's inputs and outputs it
        holds ({layer: {"in"|"out": channels}})."""
        rows: dict[str, tuple[list, list]] = {}
        counts: dict[str, dict[str, int]] = {}
        for item in full:
            module = item.dep.target.module
            if module not in names:
                continue  # an operation (ReLU, add, flatten), not a layer
            mname = names[module]
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            direction = "out" if out else "in"
            counts.setdefault(mname, {})[direction] = (counts.get(mname, {}).get(direction, 0)
                                                       + len(item.idxs))
            if out and isinstance(module, COSTED):
                r, o = rows.setdefault(mname, ([], []))
                r.extend(int(i) for i in item.idxs)
                o.extend(int(i) for i in item.root_idxs)
            elif out and any(True for _ in module.parameters(recurse=False)):
                raise SettingError("granularity", f"channel mode cannot mask layer {mname} "
                                   f"({type(module).__name__}); use `granularity` weight",
                                   lead=False)
        is_conv = isinstance(root, nn.Conv2d)
        bns = [n for n in rows if isinstance(modules[n], nn.modules.batchnorm._BatchNorm)]
        group = ChannelGroup(
            name=name, kind="conv" if is_conv else "fc", channels=len(full[0].idxs),
            layers=list(dict.fromkeys([name, *counts])),
            in_channels=root.in_channels if is_conv else root.in_features,
            kernel=root.kernel_size[0] if is_conv else 1,
            stride=root.stride[0] if is_conv else 1, fmap=self.fmaps.get(name, 1),
            rows=[(n, torch.tensor(r), torch.tensor(o)) for n, (r, o) in rows.items()],
            activation=min(bns, key=lambda n: self.forward.get(n, 0)) if bns else name)
        return group, counts

    # -- cost ------------------------------------------------------------------------------
    def shares(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per costed layer, the share of its inputs and of its outputs each group holds."""
        G = len(self.groups)
        out = {}
        for name, module in self._costed.items():
            n_in, n_out = _channels(module)
            a_in, a_out = np.zeros(G), np.zeros(G)
            for gi, n in self._out.get(name, []):
                a_out[gi] += n / n_out
            for gi, n in self._in.get(name, []):
                a_in[gi] += n / n_in
            out[name] = (a_in, a_out)
        return out

    def _cost_terms(self, budget: str) -> dict:
        """cost(kept) = fixed + sum_l coef_l * (1 - in_l . r) * (1 - out_l . r), r the removed
        fraction of each group (`in_l`/`out_l`: the share of l's inputs/outputs per group)."""
        G = len(self.groups)
        coefs, ins, outs = [], [], []
        for name, (a_in, a_out) in self.shares().items():
            module = self._costed[name]
            bilinear = isinstance(module, nn.Conv2d | nn.Linear) and not _depthwise(module)
            if budget == "flops":
                parts = [(self._flops.get(name, 0.0), bilinear)]
            else:
                w = module.weight.numel() if getattr(module, "weight", None) is not None else 0
                b = module.bias.numel() if getattr(module, "bias", None) is not None else 0
                parts = [(float(w), bilinear), (float(b), False)]
            for coef, both in parts:
                if coef:
                    coefs.append(coef)
                    ins.append(a_in if both else np.zeros(G))
                    outs.append(a_out)
        coef_array = np.array(coefs, dtype=np.float64)
        fixed = self.total[budget] - coef_array.sum()
        return {"coef": coef_array, "in": np.array(ins).reshape(len(coef_array), G),
                "out": np.array(outs).reshape(len(coef_array), G), "fixed": fixed}

    def add_cost(self, budget: str, model: CostModel) -> None:
        """Another budget, whose cost `model.cost(removed)` is a function of each group's
        removed fraction (a `latency_table.LatencyModel`)."""
        self._models[budget] = model
        self.total[budget] = float(model.cost(np.zeros(len(self.groups))))

    def cost(self, kept: np.ndarray | list[int], budget: str = "flops") -> float:
        """The network's FLOPs or params (or an added budget) with `kept[g]` channels of each
        group kept."""
        sizes = np.array([g.channels for g in self.groups], dtype=np.float64)
        removed = 1.0 - np.asarray(kept, dtype=np.float64) / sizes
        if budget in self._models:
            return float(self._models[budget].cost(removed))
        t = self._terms[budget]
        return float(t["fixed"] + np.sum(t["coef"] * (1.0 - t["in"] @ removed)
                                          * (1.0 - t["out"] @ removed)))

    def group_cost(self, g: int, budget: str = "flops") -> float:
        """What removing every channel of group g alone would save."""
        kept = [grp.channels for grp in self.groups]
        full = self.cost(kept, budget)
        kept[g] = 0
        return full - self.cost(kept, budget)


def _channels(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.num_features, m.num_features


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, int], dict[str, int],
                                                             str]:
    """One forward pass: the order the layers run in, each Conv2d/Linear's output height x
    width, and the last Conv2d/Linear that runs (its outputs are the classes)."""
    order: dict[str, int] = {}
    fmaps: dict[str, int] = {}
    costed: list[str] = []

    def seen(name: str, module: nn.Module):
        def hook(mod, inputs, out) -> None:
            order.setdefault(name, len(order))
            if isinstance(module, nn.Conv2d | nn.Linear):
                fmaps.setdefault(name, out.shape[-2] * out.shape[-1] if out.dim() == 4 else 1)
                costed.append(name)
        return hook

    hooks = [m.register_forward_hook(seen(n, m)) for n, m in model.named_modules() if n]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not costed:
        raise UserError("the model has no Conv2d or Linear layer, so nothing to prune")
    return order, fmaps, costed[-1]


def _module_flops(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """fvcore's FLOPs per module ('' is the whole model)."""
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return {k: float(v) for k, v in analysis.by_module().items()}


def network_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        example = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
        return int(_module_flops(model, example)[""])
    finally:
        model.train(was_training)


class Masker:
    """Zeroes groups' channels in place in `model` (whose layer names are the graph's): the
    weight and bias rows of every producing layer, so a masked channel is exactly zero and
    the network computes what the slimmed one would. The dense values are kept to restore."""

    def __init__(self, model: nn.Module, graph: ChannelGraph):
        modules = dict(model.named_modules())
        self.parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]]
        self.parts = []
        self.names = [g.name for g in graph.groups]
        self.removed: dict[str, list[int]] = {}  # the root channels masked now, by group
        for g in graph.groups:
            parts = []
            for name, rows, owner in g.rows:
                module = modules[name]
                for p in (module.weight, getattr(module, "bias", None)):
                    if isinstance(p, torch.Tensor):
                        r = rows.to(p.device)
                        parts.append((p, r, owner.to(p.device), p.detach()[r].clone()))
            self.parts.append(parts)

    @torch.no_grad()
    def apply(self, g: int, removed: torch.Tensor) -> None:
        """Group g with exactly the root channels `removed` masked."""
        self.removed[self.names[g]] = sorted(int(i) for i in removed)
        for param, rows, owner, dense in self.parts[g]:
            param[rows] = dense
            if len(removed):
                drop = torch.isin(owner, removed.to(owner.device))
                param[rows[drop]] = 0


def prune_channels(model: nn.Module, input_shape: tuple[int, ...],
                   removed: dict[str, list[int]]) -> nn.Module:
    """A copy of `model` with each group's `removed` root channels taken out for real
    (Torch-Pruning); the groups are named by their root layers, indexed as on `model`."""
    slim = copy.deepcopy(model).eval()
    param = next(slim.parameters())
    example = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    graph = dependency_graph(slim, example)
    modules = dict(slim.named_modules())
    for name, idxs in removed.items():
        if not idxs:
            continue
        if name not in modules:
            raise UserError(f"channel policy names {name}, which is not in the model")
        root = modules[name]
        pruner = graph.get_pruner_of_module(root)
        if pruner is None:
            raise UserError(f"channel policy names {name}, which has no channels to prune")
        graph.get_pruning_group(root, pruner.prune_out_channels, idxs=list(idxs)).prune()
    return slim
