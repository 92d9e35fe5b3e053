"""Which format a model file is written in: its suffix says, and the suffix says how it opens.

    .rlprune  rlprune's own format (`rlprune.model/1`): rlprune.load_model(FILE)
    .pt2      a torch.export archive: torch.export.load(FILE).module()
    .onnx     an ONNX file: onnxruntime.InferenceSession(FILE)
    .pt       a torch.save'd {"meta", "state_dict"}: torch.load(FILE)["state_dict"] (only
              where the pruned model keeps the dense model's architecture: `rlprune apply`
              of a weight policy)

`format_of(path, ...)` is the one place a command turns `--out FILE` (and `--format`) into a
format, or refuses it in one line that lists the suffixes and how each opens. A light module
(no torch): the command line's settings read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from rlprune.models.errors import SettingError


@dataclass(frozen=True)
class FileFormat:
    """A model file's format: its `name` (`--format`), `suffix`, and how it `opens`."""

    name: str
    suffix: str
    opens: str


RLPRUNE = FileFormat("rlprune", ".rlprune", "rlprune.load_model(FILE)")
PT2 = FileFormat("pt2", ".pt2", "torch.export.load(FILE).module()")
ONNX = FileFormat("onnx", ".onnx", "onnxruntime.InferenceSession(FILE)")
STATE_DICT = FileFormat("state_dict", ".pt", "torch.load(FILE)['state_dict']")
# what `rlprune export-model` writes, and what `rlprune apply` writes
EXPORT_FORMATS = (RLPRUNE, PT2, ONNX)
APPLY_FORMATS = (RLPRUNE, PT2, ONNX, STATE_DICT)


def suffixes_text(formats: tuple[FileFormat, ...]) -> str:
    """`.rlprune (rlprune.load_model(FILE)), .pt2 (...) or .onnx (...)`."""
    parts = [f"{f.suffix} ({f.opens})" for f in formats]
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]


def format_of(path: str | PurePath, format: str = "auto", *,  # noqa: A002
              formats: tuple[FileFormat, ...] = EXPORT_FORMATS,
              setting: str = "path") -> FileFormat:
    """The format of `path` by its suffix; `format` (a name, or `auto`) must agree with it.
    Refuses an unknown suffix or a mismatch with one SettingError naming `setting` (the
    command line writes its flag, `--out`)."""
    name = PurePath(path).name
    suffix = PurePath(path).suffix.lower()
    found = next((f for f in formats if f.suffix == suffix), None)
    if found is None:
        raise SettingError(setting, f"{name!r} must end in {suffixes_text(formats)}: the "
                           "suffix says the format")
    if format not in ("auto", found.name):
        raise SettingError("format", f"{format} does not match `{setting}` {name!r} (its "
                           f"suffix makes it {found.name}); end `{setting}` in "
                           f"{suffixes_text(formats)}, or leave `format` out",
                           others=(setting,))
    return found
