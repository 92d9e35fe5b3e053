"""The `rlprune.model/1` file: a zip (LZMA-compressed) of `meta.json` and either the weights,
stored sparse (`models.sparse_io`: a bitmask and the non-zero values, bit-exact) with the
model's registry name or factory to rebuild it, or a `torch.export` program (a channel-pruned
network, an int8 one, or a model given as a Python object that cannot be rebuilt by name).

`save_model` writes one, `load_model` (`rlprune.load_model`) gives back a runnable
`nn.Module`, `model_file_bytes` is the size one would have.
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
from rlprune.models.train import fixed_mode

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


def model_file_bytes(model: nn.Module, meta: dict, *, rebuild: dict | None,
                     input_shape: tuple[int, ...]) -> int:
    """The size on disk of `model` saved by `save_model` (written to a scratch file)."""
    with tempfile.TemporaryDirectory(prefix="rlprune-size-") as scratch:
        path = Path(scratch) / "model"
        save_model(path, model, meta, rebuild=rebuild, input_shape=input_shape)
        return path.stat().st_size
