"""Deployable artifacts of a finished run, measured where they will run.

`export(run, path, format=..., quantize=...)` writes one file, in the format its suffix names
(`model_formats`: `.rlprune`, `.pt2` or `.onnx`), and returns the table of the variants it
measured: the dense and the pruned model in fp32 and, with `quantize` int8, in
int8 (post-training; after quantization-aware training too when asked). Each row gives the
size of its `rlprune.model/1` file (`model_file`; the dense fp32 model: its state_dict, and
gzipped), its test accuracy in PyTorch and its median CPU latency at batch 1 and 32 in
PyTorch eager; with `format` onnx also its ONNX file's size, ONNX Runtime's test accuracy and
latency (`onnx_runtime`). Every latency comes from one interleaved measurement on one thread
(`measure.interleaved_ms`), so a load on a shared machine slows the variants alike.
"""

from __future__ import annotations

import gzip
import io
import tempfile
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
from rlprune.models.train import evaluate
from rlprune.service.jobs import onnx_runtime
from rlprune.service.jobs.dense_loader import load_dense
from rlprune.service.jobs.export_config import ExportConfig
from rlprune.service.jobs.files import load_policy, refuse_existing
from rlprune.service.jobs.measure import LATENCY_BATCHES, interleaved_ms, torch_runner
from rlprune.service.jobs.model_file import (  # noqa: F401 (re-exported)
    MODEL_FORMAT,
    load_model,
    model_file_bytes,
    save_model,
    write_model,
)
from rlprune.service.jobs.model_formats import ONNX, format_of
from rlprune.service.jobs.report import load_note
from rlprune.service.jobs.run_folder import INT8_FILE, Job, read_mapping
from rlprune.service.jobs.run_model import rebuild_spec, run_model

RUNTIMES = ("pytorch", "onnxruntime")


@dataclass
class Exported:
    """What `export` wrote and measured."""

    path: Path
    # variant, size_mb, test_accuracy, latency_ms[runtime][batch]; with ONNX: onnx_mb,
    # onnx_accuracy, onnx_agreement (the file's predictions against its PyTorch model's)
    rows: list[dict] = field(default_factory=list)
    onnx_agreement: float | None = None  # the written ONNX file's, on the test split
    conditions: dict = field(default_factory=dict)  # the machine's load while timed


# -- the run ---------------------------------------------------------------------------------
def _finished_run(run: str | Path) -> tuple[Job, SearchConfig, dict, dict]:
    """The finished run's job, config, policy and deployment.json, every file read (and
    refused if damaged) before any work."""
    job = Job.open(run)
    state = job.status()["state"]
    if state != "finished" or not job.model_file.is_file():
        raise UserError(f"run {job.path} is {state}, not finished; export a finished run "
                        f"(`rlprune resume {job.path}` finishes it)")
    deploy_path = job.path / "deployment.json"
    deploy = read_mapping(deploy_path) if deploy_path.is_file() else {}
    return (job, SearchConfig.from_json(job.config()), load_policy(job.path / "policy.json"),
            deploy)


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks of the zeros of every Conv2d/Linear weight (what quantization must keep)."""
    return {f"{n}.weight": m.weight.detach() != 0 for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


def export(run: str | Path, path: str | Path, *, format: str = "auto",  # noqa: A002
           quantize: str = "none", qat_epochs: int = 0, force: bool = False,
           model: nn.Module | None = None, data: Data | None = None,
           on_epoch=None) -> Exported:
    """Export finished run `run` to `path` (see the module's docstring). A run made from
    Python objects needs its `model` and `data` again."""
    ExportConfig.of(path=str(path), format=format, quantize=quantize, qat_epochs=qat_epochs,
                    force=force)  # the settings' checks, as the command line's
    fmt = format_of(path, format)
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
    pruned = run_model(job, config, policy, dense)
    variants = _variants(dense.model, pruned, data, quantize, qat_epochs, config.seed, on_epoch)
    meta = {"model": config.model, "dataset": config.dataset,
            "granularity": granularity_of(policy), "run": str(job.path)}
    rebuild = rebuild_spec(config.model, data, policy)
    out = Exported(path)
    for name, variant in variants.items():
        out.rows.append(_row(name, variant, data, meta, rebuild if variant is pruned else None))
    final = list(variants)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)  # refuse_existing checked it can be made
    runners = {(name, "pytorch"): torch_runner(m) for name, m in variants.items()}
    with tempfile.TemporaryDirectory(prefix=".rlprune-onnx-", dir=path.parent) as scratch:
        if fmt == ONNX:
            files = _with_onnx(out, variants, data, Path(scratch), runners)
        out.conditions = _time(out.rows, runners, data.input_shape)
        if fmt == ONNX:
            files[final].replace(path)
        else:
            write_model(path, variants[final], {**meta, "quantize": quantize}, fmt=fmt,
                        input_shape=data.input_shape,
                        rebuild=rebuild if variants[final] is pruned else None)
    _record(job, out, deploy)
    return out


def artifact_summary(pruned: nn.Module, config: SearchConfig, data: Data, policy: dict,
                     written: Path) -> dict:
    """What a finished search gives a user to ship, for its result table: the size of the
    pruned model's `rlprune.model/1` file (`written`, the run folder's), and of its int8 one
    (post-training quantization, when this torch build can; written beside it as `INT8_FILE`),
    with the command that writes the other formats and what it does to speed."""
    from rlprune.env.granularity import granularity_named

    kind = granularity_named(granularity_of(policy))
    run = written.parent
    out = {"artifact": kind.artifact, "note": kind.speed_note,
           "command": kind.export_hint.format(run=run), "file_mb": written.stat().st_size / 1e6}
    if not config.int8_size:
        return out
    try:
        _check_int8()
    except SettingError:
        return out  # no int8 kernels or no torchao here: the fp32 file only
    from rlprune.models.quantize import ptq

    meta = {"model": config.model, "dataset": config.dataset, "granularity": kind.name,
            "quantize": "int8"}
    save_model(run / INT8_FILE, ptq(pruned.cpu().eval(), data.train), meta, rebuild=None,
               input_shape=data.input_shape)
    out.update(int8_mb=(run / INT8_FILE).stat().st_size / 1e6, int8_file=INT8_FILE)
    return out


def _variants(dense: nn.Module, pruned: nn.Module, data: Data, quantize: str, qat_epochs: int,
              seed: int, on_epoch) -> dict[str, nn.Module]:
    """The models to measure, by row name; the last is the one written."""
    variants = {"dense fp32": dense, "pruned fp32": pruned}
    if quantize == "int8":
        from rlprune.models.quantize import ptq, qat

        variants["dense + int8 (PTQ)"] = ptq(dense, data.train)
        variants["pruned + int8 (PTQ)"] = ptq(pruned, data.train)
        if qat_epochs:
            variants["pruned + int8 (QAT)"] = qat(pruned, data.train, epochs=qat_epochs,
                                                   masks=_masks(pruned), seed=seed,
                                                   on_epoch=on_epoch)
    return variants


def _row(name: str, model: nn.Module, data: Data, meta: dict, rebuild: dict | None) -> dict:
    if name == "dense fp32":  # what a user has before: the state_dict, as torch.save writes it
        state = _state(model)
        row = {"size_mb": len(state) / 1e6, "gzip_mb": len(gzip.compress(state)) / 1e6}
    else:
        quantize = "int8" if "int8" in name else "none"
        row = {"size_mb": model_file_bytes(model, {**meta, "quantize": quantize},
                                           rebuild=rebuild, input_shape=data.input_shape) / 1e6}
    return {"variant": name, **row, "test_accuracy": evaluate(model, data.test)}


def _with_onnx(out: Exported, variants: dict[str, nn.Module], data: Data, folder: Path,
               runners: dict) -> dict[str, Path]:
    """Every variant's ONNX file in `folder`, its size, ONNX Runtime's accuracy and agreement
    with PyTorch in its row, its session among the `runners` to time."""
    files = _onnx_files(variants, data, folder)
    for row in out.rows:
        runtime = onnx_runtime.session(files[row["variant"]])
        runners[row["variant"], "onnxruntime"] = _ort_runner(runtime)
        predicted = onnx_runtime.predict(runtime, data.test)
        source = _predictions(_source(variants, row["variant"]), data)
        row.update(onnx_mb=files[row["variant"]].stat().st_size / 1e6,
                   onnx_accuracy=float((predicted == data.test.y.numpy()).mean()),
                   onnx_agreement=float((predicted == source).mean()))
    out.onnx_agreement = out.rows[-1]["onnx_agreement"]
    return files


def _onnx_files(variants: dict[str, nn.Module], data: Data, folder: Path) -> dict[str, Path]:
    """Each variant's ONNX file: the float ones exported; a PTQ int8 one quantized by ONNX
    Runtime from its float model's file (measured faster than exporting PyTorch's int8
    graph: decisions.md); a QAT one exported from its trained int8 graph."""
    files: dict[str, Path] = {}
    for i, (name, model) in enumerate(variants.items()):
        files[name] = folder / f"{i}.onnx"
        if "(PTQ)" in name:
            source = files[name.split(" + ")[0] + " fp32"]
            onnx_runtime.quantize_onnx(source, files[name], data.train)
        else:
            onnx_runtime.write_onnx(model, data.input_shape, files[name])
    return files


def _ort_runner(runtime):
    return lambda x: runtime.run(None, {onnx_runtime.INPUT: x})


def _source(variants: dict[str, nn.Module], name: str) -> nn.Module:
    """The PyTorch model a variant's ONNX file was made from (a PTQ file: the float model
    ONNX Runtime quantized)."""
    return variants[name.split(" + ")[0] + " fp32"] if "(PTQ)" in name else variants[name]


@torch.no_grad()
def _predictions(model: nn.Module, data: Data) -> np.ndarray:
    return torch.cat([model(x) for x in data.test.x.split(500)]).argmax(1).numpy()


def _time(rows: list[dict], runners: dict, input_shape: tuple[int, ...]) -> dict:
    """Every runner's latency, in one interleaved measurement, into its row; the machine's
    load and the repeats' spread while they were timed."""
    conditions: dict = {}
    measured = interleaved_ms({f"{v}|{r}": run for (v, r), run in runners.items()},
                              input_shape, conditions=conditions)
    for row in rows:
        row["latency_ms"] = {runtime: {str(b): measured[f"{row['variant']}|{runtime}"][b]
                                       for b in LATENCY_BATCHES}
                             for runtime in RUNTIMES if (row["variant"], runtime) in runners}
    return conditions


def _state(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def quantized_engines() -> list[str]:
    """The quantized engines this torch build has (the int8 kernels it can run)."""
    return list(torch.backends.quantized.supported_engines)


def _check_int8() -> None:
    if "x86" not in quantized_engines():
        raise SettingError("quantize", "int8 needs the x86 quantized engine, which this torch "
                           "build lacks; use `quantize` none")
    from rlprune.models.quantize import _toolkit

    _toolkit()  # refuses a missing torchao before any work


def _record(job: Job, out: Exported, deploy: dict) -> None:
    """The table goes into the run's deployment.json (under "export") and report.md."""
    from rlprune.service.jobs.files import write_json, write_text_atomic

    deploy_path = job.path / "deployment.json"
    deploy["export"] = {"path": str(out.path), "rows": out.rows,
                        "onnx_agreement": out.onnx_agreement, "conditions": out.conditions}
    write_json(deploy_path, deploy)
    report = job.path / "report.md"
    text = report.read_text() if report.is_file() else ""
    text = text.split("\n## Deployable artifact\n")[0].rstrip("\n")
    write_text_atomic(report, text + "\n\n## Deployable artifact\n\n" + table(out) + "\n")


def table(out: Exported) -> str:
    """The export's rows as a Markdown table, and what they say about speed."""
    onnx = out.onnx_agreement is not None
    heads = ["variant", "file (MB)", "test accuracy"]
    if onnx:
        heads += ["ONNX file (MB)", "ONNX Runtime accuracy"]
    runtimes = RUNTIMES if onnx else RUNTIMES[:1]
    names = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
    heads += [f"{names[r]} ms, batch {b}" for r in runtimes for b in LATENCY_BATCHES]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for r in out.rows:
        size = f"{r['size_mb']:.4f}" + (f" (gzip {r['gzip_mb']:.4f})" if "gzip_mb" in r else "")
        cells = [r["variant"], size, f"{100 * r['test_accuracy']:.2f}%"]
        if onnx:
            cells += [f"{r['onnx_mb']:.4f}", f"{100 * r['onnx_accuracy']:.2f}%"]
        cells += [f"{r['latency_ms'][rt][str(b)]:.3f}" for rt in runtimes
                  for b in LATENCY_BATCHES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + _speed_notes(out.rows, runtimes, names)
    loaded = load_note(out.conditions)
    if loaded:
        lines.append(f"Latencies {loaded}.")
    if out.onnx_agreement is not None:
        lines.append(f"ONNX Runtime agrees with PyTorch on {100 * out.onnx_agreement:.2f}% "
                     "of the test images (the written file against the PyTorch model it was "
                     "made from).")
    return "\n".join(lines)


def _speed_notes(rows: list[dict], runtimes: tuple[str, ...], names: dict) -> list[str]:
    """Per runtime, at the largest batch: the pruned model against the dense one, and int8
    against fp32 where it is slower (int8 is then for size, not speed, in that runtime)."""
    by = {r["variant"]: r for r in rows}
    batch = str(LATENCY_BATCHES[-1])
    notes = []
    for rt in runtimes:
        ms = {v: r["latency_ms"][rt][batch] for v, r in by.items()}
        text = (f"{names[rt]}, batch {batch}: pruned fp32 runs "
                f"{ms['dense fp32'] / ms['pruned fp32']:.2f}x the dense model's speed")
        int8 = ms.get("pruned + int8 (PTQ)")
        if int8 is not None:
            ratio = ms["pruned fp32"] / int8
            text += (f"; its int8 {ratio:.2f}x the pruned fp32" + (
                " (slower: on this machine int8 is for size here, not speed)"
                if ratio < 1 else ""))
        notes.append(text + ".")
    return notes
