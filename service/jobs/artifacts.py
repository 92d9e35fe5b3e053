"""Deployable artifacts of a finished run: small on disk, int8 if asked, ONNX if asked.

`export(run, path, format=..., quantize=...)` writes one file and returns the table of every
variant it measured: size on disk, test accuracy and CPU latency (batch 1, median after
warm-up) for the dense fp32 model, the pruned one, pruned + int8 (post-training, and after
quantization-aware training when asked) and the ONNX file when made. `load_model(path)`
gives back a runnable `nn.Module` from an `rlprune.model/1` file.

An `rlprune.model/1` file is a zip (LZMA-compressed) of `meta.json` and either the weights,
stored sparse (`models.sparse_io`: a bitmask and the non-zero values, bit-exact) with the
model's registry name or factory to rebuild it, or a `torch.export` program (a channel-pruned
network, an int8 one, or a model given as a Python object that cannot be rebuilt by name).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlprune.agent.config import SearchConfig
from rlprune.env.policy import granularity_of
from rlprune.models.data import Data
from rlprune.models.dense import Dense
from rlprune.models.errors import SettingError, UserError
from rlprune.models.registry import build_model
from rlprune.models.sparse_io import pack, unpack
from rlprune.models.train import evaluate, fixed_mode, load_program, load_weights
from rlprune.service.jobs.dense_loader import is_object_name, load_dense
from rlprune.service.jobs.export_config import ExportConfig
from rlprune.service.jobs.files import load_policy, refuse_existing
from rlprune.service.jobs.measure import latency_ms, state_bytes
from rlprune.service.jobs.run_folder import Job, read_mapping

MODEL_FORMAT = "rlprune.model/1"


@dataclass
class Exported:
    """What `export` wrote and measured."""

    path: Path
    rows: list[dict] = field(default_factory=list)  # variant, size_mb, test_accuracy, latency
    onnx_agreement: float | None = None  # ONNX vs PyTorch predictions on the test split


# -- the file format -------------------------------------------------------------------------
def _write_zip(path: Path, meta: dict, files: dict[str, bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as z:
            z.writestr("meta.json", json.dumps({"format": MODEL_FORMAT, **meta}, indent=1))
            for name, data in files.items():
                z.writestr(name, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _program_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model.cpu(), (torch.zeros(2, *input_shape),),
                                  dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def save_model(path: Path, model: nn.Module, meta: dict, *, rebuild: dict | None,
               input_shape: tuple[int, ...]) -> None:
    """`model` as an `rlprune.model/1` file: its weights stored sparse with `rebuild` (how
    to build the architecture: registry name or factory and its arguments), or, without
    `rebuild`, as a program."""
    if rebuild is not None:
        _write_zip(path, {**meta, "kind": "weights", "rebuild": rebuild},
                   pack(model.state_dict()))
    else:
        _write_zip(path, {**meta, "kind": "program", "input_shape": list(input_shape)},
                   {"program.pt2": _program_bytes(model, input_shape)})


def load_model(path: str | Path) -> nn.Module:
    """The runnable model in an `rlprune.model/1` file (in eval mode, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json"))
            files = {name: z.read(name) for name in z.namelist() if name != "meta.json"}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not an {MODEL_FORMAT} file ({type(exc).__name__})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not an {MODEL_FORMAT} file")
    if meta["kind"] == "program":
        if meta.get("quantize") == "int8":
            from rlprune.models.quantize import register_int8_ops

            register_int8_ops()
        program = torch.export.load(io.BytesIO(files["program.pt2"]))
        return fixed_mode(program.module())
    spec = meta["rebuild"]
    model = build_model(spec["model"], **spec["kwargs"])
    model.load_state_dict(unpack(files))
    return model.eval()


# -- the run ---------------------------------------------------------------------------------
def _finished_run(run: str | Path) -> tuple[Job, SearchConfig, dict, dict]:
    """The finished run's job, config, policy and deployment.json, every file read (and
    refused if damaged) before any work."""
    job = Job.open(run)
    state = job.status()["state"]
    if state != "finished" or not (job.path / "pruned.pt").is_file():
        raise UserError(f"run {job.path} is {state}, not finished; export a finished run "
                        f"(`rlprune resume {job.path}` finishes it)")
    deploy_path = job.path / "deployment.json"
    deploy = read_mapping(deploy_path) if deploy_path.is_file() else {}
    return (job, SearchConfig.from_json(job.config()), load_policy(job.path / "policy.json"),
            deploy)


def _pruned_model(job: Job, config: SearchConfig, policy: dict, dense: Dense) -> nn.Module:
    if granularity_of(policy) == "channel":
        model, _ = load_program(job.path / "pruned.pt")
        return model
    assert dense.data.spec is not None  # set by Data.__post_init__
    model = (copy.deepcopy(dense.model) if is_object_name(config.model)
             else build_model(config.model, **dense.data.spec.model_kwargs()))
    load_weights(model, job.path / "pruned.pt")
    return model.eval()


def _rebuild(config: SearchConfig, data: Data, policy: dict) -> dict | None:
    """How load_model rebuilds the architecture, or None when it cannot (channel-pruned,
    or a Python object): then a program is stored."""
    if granularity_of(policy) == "channel" or is_object_name(config.model):
        return None
    assert data.spec is not None  # set by Data.__post_init__
    return {"model": config.model, "kwargs": data.spec.model_kwargs()}


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks of the zeros of every Conv2d/Linear weight (what quantization must keep)."""
    return {f"{n}.weight": m.weight.detach() != 0 for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


def _row(variant: str, size: int, model: nn.Module | None, data: Data,
         accuracy: float | None = None, latency: float | None = None) -> dict:
    if model is not None:
        accuracy = evaluate(model, data.test) if accuracy is None else accuracy
        latency = latency_ms(model, data.input_shape, 1) if latency is None else latency
    return {"variant": variant, "size_mb": size / 1e6, "test_accuracy": accuracy,
            "latency_ms": latency}


def export(run: str | Path, path: str | Path, *, format: str = "pt",  # noqa: A002
           quantize: str = "none", qat_epochs: int = 0, force: bool = False,
           model: nn.Module | None = None, data: Data | None = None,
           on_epoch=None) -> Exported:
    """Export finished run `run` to `path` (see the module's docstring). A run made from
    Python objects needs its `model` and `data` again."""
    ExportConfig.of(path=str(path), format=format, quantize=quantize, qat_epochs=qat_epochs,
                    force=force)  # the settings' checks, as the command line's
    if model is not None and data is None:
        raise UserError("give the data with the model to export (a run made from Python "
                        "objects needs both again)")
    path = Path(path)
    refuse_existing(path, force, field="path")
    job, config, policy, deploy = _finished_run(run)
    if quantize == "int8":
        _check_int8()
    config.device = "cpu"
    dense = load_dense(config) if model is None or data is None else Dense.of(model, data)
    data = dense.data
    pruned = _pruned_model(job, config, policy, dense)
    rebuild = _rebuild(config, data, policy)
    dense_bytes = state_bytes(dense.model)
    out = Exported(path)
    out.rows.append({**_row("dense fp32", dense_bytes, dense.model, data),
                     "gzip_mb": len(gzip.compress(_state(dense.model))) / 1e6})
    meta = {"model": config.model, "dataset": config.dataset,
            "granularity": granularity_of(policy), "run": str(job.path)}
    variants = {"pruned fp32": pruned}
    path.parent.mkdir(parents=True, exist_ok=True)  # refuse_existing checked it can be made
    fp32 = _sized(lambda p: save_model(p, pruned, {**meta, "quantize": "none"},
                                       rebuild=rebuild, input_shape=data.input_shape), path)
    out.rows.append(_row("pruned fp32", fp32, pruned, data))
    if quantize == "int8":
        from rlprune.models.quantize import ptq, qat

        variants["pruned + int8 (PTQ)"] = ptq(pruned, data.train)
        if qat_epochs:
            variants["pruned + int8 (QAT)"] = qat(pruned, data.train, epochs=qat_epochs,
                                                   masks=_masks(pruned), seed=config.seed,
                                                   on_epoch=on_epoch)
        for name in [n for n in variants if "int8" in n]:
            size = _sized(lambda p, m=variants[name]: save_model(
                p, m, {**meta, "quantize": "int8"}, rebuild=None,
                input_shape=data.input_shape), path)
            out.rows.append(_row(name, size, variants[name], data))
    final = variants[list(variants)[-1]]
    if format == "onnx":
        out.onnx_agreement = _write_onnx(final, data, path, out)
    else:
        save_model(path, final, {**meta, "quantize": quantize}, input_shape=data.input_shape,
                   rebuild=rebuild if final is pruned else None)
    _record(job, out, deploy)
    return out


def _state(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _sized(write, near: Path) -> int:
    """The size of the file `write(path)` makes (in a scratch file beside `near`)."""
    scratch = near.with_name(f".{near.name}.size{os.getpid()}")
    try:
        write(scratch)
        return scratch.stat().st_size
    finally:
        scratch.unlink(missing_ok=True)


def quantized_engines() -> list[str]:
    """The quantized engines this torch build has (the int8 kernels it can run)."""
    return list(torch.backends.quantized.supported_engines)


def _check_int8() -> None:
    if "x86" not in quantized_engines():
        raise SettingError("quantize", "int8 needs the x86 quantized engine, which this torch "
                           "build lacks; use `quantize` none")
    from rlprune.models.quantize import _toolkit

    _toolkit()  # refuses a missing torchao before any work


def _write_onnx(model: nn.Module, data: Data, path: Path, out: Exported) -> float:
    """Export to ONNX, run it in ONNX Runtime on the test split: the share of test images
    where its prediction agrees with PyTorch's."""
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.onnx.export(model, (data.test.x[:2],), str(tmp), dynamo=True,
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        x = data.test.x.numpy()
        predicted = np.concatenate([session.run(None, {name: x[i:i + 500]})[0].argmax(1)
                                    for i in range(0, len(x), 500)])
        with torch.no_grad():
            reference = torch.cat([model(data.test.x[i:i + 500]).argmax(1)
                                   for i in range(0, len(x), 500)]).numpy()
        agreement = float((predicted == reference).mean())
        accuracy = float((predicted == data.test.y.numpy()).mean())
        one = x[:1]
        for _ in range(3):
            session.run(None, {name: one})
        import time

        times = []
        for _ in range(20):
            t = time.perf_counter()
            session.run(None, {name: one})
            times.append(time.perf_counter() - t)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    out.rows.append({**_row("ONNX (onnxruntime)", path.stat().st_size, None, data, accuracy,
                            1000.0 * float(np.median(times))), "agreement": agreement})
    return agreement


def _record(job: Job, out: Exported, deploy: dict) -> None:
    """The table goes into the run's deployment.json (under "export") and report.md."""
    from rlprune.service.jobs.files import write_json, write_text_atomic

    deploy_path = job.path / "deployment.json"
    deploy["export"] = {"path": str(out.path), "rows": out.rows,
                        "onnx_agreement": out.onnx_agreement}
    write_json(deploy_path, deploy)
    report = job.path / "report.md"
    text = report.read_text() if report.is_file() else ""
    text = text.split("\n## Deployable artifact\n")[0].rstrip("\n")
    write_text_atomic(report, text + "\n\n## Deployable artifact\n\n" + table(out) + "\n")


def table(out: Exported) -> str:
    lines = ["| variant | size on disk (MB) | test accuracy | CPU latency, batch 1 (ms) |",
             "|---|---:|---:|---:|"]
    for r in out.rows:
        size = f"{r['size_mb']:.4f}" + (f" (gzip {r['gzip_mb']:.4f})" if "gzip_mb" in r else "")
        lines.append(f"| {r['variant']} | {size} | {100 * r['test_accuracy']:.2f}% | "
                     f"{r['latency_ms']:.3f} |")
    if out.onnx_agreement is not None:
        lines.append("")
        lines.append(f"ONNX Runtime agrees with PyTorch on {100 * out.onnx_agreement:.2f}% of "
                     "the test images.")
    return "\n".join(lines)
