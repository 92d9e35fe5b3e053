"""`export`'s settings (`ExportConfig`): the file, its format and its quantization.

Declared with `setting()` like `SearchConfig`, so `rlprune export-model`'s flags are made from
them and `export` (the command line and the Python API alike) checks them in one place. A
light module: the command line reads it to build its parser, before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlprune.agent.config import MAX_EPOCHS
from rlprune.models.errors import SettingError
from rlprune.models.settings import check, setting, typed_fields
from rlprune.service.jobs.model_formats import EXPORT_FORMATS, format_of

FORMATS = ("auto", *(f.name for f in EXPORT_FORMATS))
QUANTIZATIONS = ("none", "int8")


@dataclass
class ExportConfig:
    """`rlprune export-model RUN`: how a finished run's pruned model is written."""

    path: str | None = setting(
        None, "The file to write; its suffix says the format (.rlprune, .pt2 or .onnx).",
        flag="--out", required=True,
        metavar="FILE")
    format: str = setting(
        "auto", "auto: the one --out's suffix names; another must agree with it (rlprune, "
        "pt2 or onnx).", choices=FORMATS)
    quantize: str = setting(
        "none", "int8: static post-training quantization of weights and activations (PT2E), "
        "calibrated on train batches.", choices=QUANTIZATIONS)
    qat_epochs: int = setting(
        0, "With --quantize int8: quantization-aware training epochs, the pruning masks held.",
        min=0, max=MAX_EPOCHS, metavar="E")
    force: bool = setting(False, "Overwrite an existing file.")

    @classmethod
    def of(cls, **settings) -> ExportConfig:
        """The settings as given (types checked: a SettingError names the first that is off),
        validated."""
        config = cls(**typed_fields(cls, settings))
        config.validate()
        return config

    def validate(self) -> None:
        check(self)
        if self.path is None:
            raise SettingError("path", "is needed: the file to write")
        if self.qat_epochs and self.quantize != "int8":
            raise SettingError("qat_epochs", "needs `quantize` int8 (quantization-aware "
                               "training makes an int8 model)", others=("quantize",))
        format_of(self.path, self.format)
