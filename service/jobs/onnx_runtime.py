"""ONNX files and ONNX Runtime, the runtime rlprune measures deployments in.

`write_onnx` exports a model with `torch.onnx` (the dynamo exporter, one input "x" with a
dynamic batch axis); `quantize_onnx` is ONNX Runtime's own static quantization of such a file
(QDQ: int8 weights per output channel and symmetric, so a pruned weight stays exactly 0;
uint8 activations per tensor, calibrated on train batches); `session` opens a file with a
fixed number of threads, so that timings compare; `predict` runs a split through it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlprune.models.splits import Split

INPUT = "x"
CALIBRATION_BATCHES, CALIBRATION_BATCH = 4, 128  # as PyTorch's PTQ (models.quantize)


def write_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """`model` (float in eval mode, or a PT2E int8 graph, which has no train/eval switch) as
    an ONNX file at `path` (written whole, then renamed, so a failure leaves no partial
    file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.cpu(), (torch.zeros(2, *input_shape),), str(tmp),
                              dynamo=True, dynamic_shapes=({0: batch},), input_names=[INPUT],
                              external_data=False, verbose=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_onnx(source: Path, path: Path, calibration: Split) -> None:
    """ONNX Runtime's static int8 quantization of the float file `source` into `path`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    batches = [calibration.x[i * CALIBRATION_BATCH:(i + 1) * CALIBRATION_BATCH].numpy()
               for i in range(CALIBRATION_BATCHES)]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter([{INPUT: b} for b in batches if len(b)])

        def get_next(self):
            return next(self.left, None)

    prepared = path.with_name(f".{path.name}.pre{os.getpid()}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        quant_pre_process(str(source), str(prepared))  # shapes inferred, graph optimised
        quantize_static(str(prepared), str(tmp), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        os.replace(tmp, path)
    finally:
        prepared.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def session(path: Path | bytes, threads: int = 1):
    """An ONNX Runtime CPU session of the file `path` (or a serialized model) on `threads`
    threads (one: latencies compare across variants and with PyTorch pinned the same way)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def predict(runtime, split: Split, batch: int = 500) -> np.ndarray:
    """The class ONNX Runtime session `runtime` predicts for every image of `split`."""
    x = split.x.numpy()
    return np.concatenate([runtime.run(None, {INPUT: x[i:i + batch]})[0].argmax(1)
                           for i in range(0, len(x), batch)])
