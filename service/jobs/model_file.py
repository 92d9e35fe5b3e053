"""The `rlprune.model/1` file (suffix `.rlprune`): a zip (LZMA-compressed) of `meta.json` and
either the weights, stored sparse (`models.sparse_io`: a bitmask and the non-zero values,
bit-exact) with the model's registry name or factory to rebuild it, or a `torch.export`
program (a channel-pruned network, an int8 one, or a model given as a Python object that
cannot be rebuilt by name).

`save_model` writes one, `write_model` writes a model in the format its file's suffix names
(`model_formats`), `load_model` (`rlprune.load_model`) gives back a runnable `nn.Module` from
an `.rlprune` file or a `torch.export` archive, `model_file_bytes` is the size one would have.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from rlprune.models.errors import UserError
from rlprune.models.registry import build_model
from rlprune.models.sparse_io import pack, unpack
from rlprune.models.train import fixed_mode, load_program, save_program, save_weights
from rlprune.service.jobs.model_formats import ONNX, PT2, RLPRUNE, STATE_DICT, FileFormat
from rlprune.service.jobs.run_folder import Job

MODEL_FORMAT = "rlprune.model/1"


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


def write_model(path: Path, model: nn.Module, meta: dict, *, fmt: FileFormat,
                rebuild: dict | None, input_shape: tuple[int, ...]) -> None:
    """`model` at `path` in format `fmt` (`model_formats.format_of(path)`): `.rlprune` as
    `save_model`; `.pt2` a torch.export archive; `.onnx` an ONNX file; `.pt` its state_dict
    (for a model with the dense model's architecture: `rebuild` given, or a weight policy)."""
    if fmt == RLPRUNE:
        save_model(path, model, meta, rebuild=rebuild, input_shape=input_shape)
    elif fmt == PT2:
        save_program(path, model, input_shape, meta)
    elif fmt == ONNX:
        from rlprune.service.jobs.onnx_runtime import write_onnx

        write_onnx(model, input_shape, path)
    elif fmt == STATE_DICT:
        save_weights(path, model, meta)
    else:
        raise ValueError(f"no writer for {fmt.name}")


def _stored(path: Path) -> tuple[dict, dict[str, bytes]] | None:
    """An `rlprune.model/1` file's meta and files; None for a zip without meta.json (a
    torch.export archive, whose own reader says what is wrong)."""
    try:
        with zipfile.ZipFile(path) as z:
            if any(name.endswith("/data.pkl") for name in z.namelist()):
                raise UserError(f"{path} is a torch.save file, not a model file: "
                                "torch.load(FILE) opens it (a state_dict: load it into its "
                                "model with load_state_dict)")
            if "meta.json" not in z.namelist():
                return None
            meta = json.loads(z.read("meta.json"))
            files = {name: z.read(name) for name in z.namelist() if name != "meta.json"}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _not_a_model(path, type(exc).__name__) from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise _not_a_model(path, "another meta.json")
    return meta, files


def _not_a_model(path: Path, why: str) -> UserError:
    return UserError(f"{path} is neither an {MODEL_FORMAT} file (.rlprune) nor a torch.export "
                     f"archive (.pt2) ({why})")


def load_model(path: str | Path) -> nn.Module:
    """The runnable model (in eval mode, on the CPU) in an `.rlprune` file, or in a
    torch.export archive (`.pt2`; a channel run's `pruned.pt` from before `.rlprune`), whose
    `eval()` and `train()` are then no-ops (torch's own raise NotImplementedError). A run
    folder: its pruned model (`Job.model_file`)."""
    path = Path(path)
    if path.is_dir():
        path = Job.open(path).model_file
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    stored = _stored(path)
    if stored is None:
        try:
            return load_program(path)[0]
        except UserError:
            raise _not_a_model(path, "a zip without meta.json that torch.export cannot "
                               "load") from None
    meta, files = stored
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


def model_file_bytes(model: nn.Module, meta: dict, *, rebuild: dict | None,
                     input_shape: tuple[int, ...]) -> int:
    """The size on disk of `model` saved by `save_model` (written to a scratch file)."""
    with tempfile.TemporaryDirectory(prefix="rlprune-size-") as scratch:
        path = Path(scratch) / "model"
        save_model(path, model, meta, rebuild=rebuild, input_shape=input_shape)
        return path.stat().st_size
