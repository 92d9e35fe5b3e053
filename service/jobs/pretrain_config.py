"""`rlprune pretrain`'s own settings (`PretrainConfig`): how long to train, where the weights
go. What is trained (model, dataset, seed, device) is `SearchConfig`'s, declared there once.
A light module: the command line reads it to build its parser, before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass

from rlprune.agent.config import MAX_EPOCHS
from rlprune.models.errors import SettingError
from rlprune.models.settings import check, setting


@dataclass
class PretrainConfig:
    """`rlprune pretrain`: train a dense model and save its weights."""

    epochs: int | None = setting(
        None, "Training epochs (default: the model's: lenet5 8, lenet300 10, vgg-mini 8, "
        "others 30).", min=1, max=MAX_EPOCHS, metavar="N", section="pretrain")
    out: str | None = setting(
        None, "The weights file (default: runs/pretrained/MODEL-DATASET-seedS.pt).",
        metavar="PATH", section="pretrain")
    force: bool = setting(False, "Overwrite an existing weights file.", section="pretrain")

    def validate(self) -> None:
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(
                self.epochs, int) or not 1 <= self.epochs <= MAX_EPOCHS):
            raise SettingError("epochs", f"must be 1 to {MAX_EPOCHS}, got {self.epochs!r}")
        check(self)
