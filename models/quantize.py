"""int8 quantization of weights and activations with PyTorch's own tooling: PT2E (torch.export
graphs quantized by torchao's `prepare_pt2e` / `convert_pt2e`, the flow PyTorch documents as
current; the eager and FX flows in `torch.ao.quantization` are deprecated).

Weights are quantized per output channel, symmetric (zero point 0), so a pruned weight, 0.0,
stays exactly 0 in int8; activations per tensor, calibrated on train batches. The result is
a graph of quantize / dequantize and float operators (QDQ), which ONNX Runtime runs with
int8 kernels and PyTorch runs as reference arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from rlprune.models.errors import SettingError
from rlprune.models.splits import Split

CALIBRATION_BATCHES, CALIBRATION_BATCH = 4, 128


def _toolkit():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            from torchao.quantization.pt2e.quantize_pt2e import (
                convert_pt2e,
                prepare_pt2e,
                prepare_qat_pt2e,
            )
            from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer,
                get_default_x86_inductor_quantization_config,
            )
    except ImportError as exc:  # torchao missing or built for another torch
        raise SettingError("quantize", f"int8 quantization needs torchao for this torch "
                           f"({exc}); pip install torchao, or use `quantize` none",
                           lead=False) from None
    return (prepare_pt2e, prepare_qat_pt2e, convert_pt2e, allow_exported_model_train_eval,
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)


def register_int8_ops() -> None:
    """Register the quantized operators an int8 program calls (torchao's), so that
    `torch.export.load` can read one in a process that has not quantized anything."""
    _toolkit()


def _quiet(fn, *args):
    """Run torchao's prepare without its per-operator notes (e.g. that a max-pool stays
    float, which is what its quantizer intends)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args)


def _graph(model: nn.Module, example: torch.Tensor) -> nn.Module:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


def _quantizer(qat: bool):
    *_, quantizer_cls, default_config = _toolkit()
    quantizer = quantizer_cls()
    quantizer.set_global(default_config(is_qat=qat))
    return quantizer


@torch.no_grad()
def _calibrate(model: nn.Module, data: Split) -> None:
    for i in range(CALIBRATION_BATCHES):
        x = data.x[i * CALIBRATION_BATCH:(i + 1) * CALIBRATION_BATCH]
        if len(x):
            model(x)


def ptq(model: nn.Module, calibration: Split) -> nn.Module:
    """Static post-training int8 quantization of `model` (CPU), calibrated on the first
    CALIBRATION_BATCHES x CALIBRATION_BATCH images of `calibration`."""
    prepare, _, convert, allow, *_ = _toolkit()
    model = model.cpu().eval()
    prepared = _quiet(prepare, _graph(model, calibration.x[:2]), _quantizer(qat=False))
    _calibrate(prepared, calibration)
    return _finish(convert(prepared), allow)


def _finish(converted: nn.Module, allow) -> nn.Module:
    """Drop the float weights the int8 graph no longer reads (convert keeps them as
    attributes, and an export would store them beside their int8 copies)."""
    used = {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    for name, _ in [*converted.named_parameters(), *converted.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(converted.get_submodule(owner) if owner else converted, attr)
    converted.recompile()
    allow(converted)
    converted.eval()
    return converted


def qat(model: nn.Module, data: Split, *, epochs: int, masks: dict[str, torch.Tensor],
        lr: float = 0.005, batch_size: int = 128, seed: int = 0,
        on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    """Quantization-aware training: fake-quantized weights and activations trained `epochs`
    on `data` with SGD, every weight in `masks` (name -> keep mask) zeroed again after each
    step (the pruning holds), then converted to int8."""
    _, prepare_qat, convert, allow, *_ = _toolkit()
    model = model.cpu().eval()
    prepared = _quiet(prepare_qat, _graph(model, data.x[:2]), _quantizer(qat=True))
    allow(prepared)
    params = dict(prepared.named_parameters())
    held = {name: (params[name], mask) for name, mask in masks.items() if name in params}
    opt = torch.optim.SGD([p for p in prepared.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        prepared.train()
        order = torch.randperm(len(data), generator=gen)
        total, steps = 0.0, 0
        for i in range(0, len(data), batch_size):
            idx = order[i:i + batch_size]
            loss = loss_fn(prepared(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for param, mask in held.values():
                    param.mul_(mask.to(param.dtype))
            total, steps = total + loss.item(), steps + 1
        if on_epoch:
            on_epoch(epoch, total / max(1, steps))
    prepared.eval()
    return _finish(convert(prepared), allow)


def int8_weights(quantized: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weight tensors of a converted model, by their attribute names."""
    return {name: t for name, t in list(quantized.named_buffers())
            + list(quantized.named_parameters()) if t.dtype == torch.int8}
