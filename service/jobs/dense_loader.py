"""The dense model a job starts from, by name: its data, its weights, or a cached pre-training.

Models and data given as Python objects (the API) carry names in angle brackets (`<Net>`,
`<data>`) in a run's config: such a run can only be resumed by handing the objects again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from rlprune.agent.config import SearchConfig
from rlprune.env.make import check_prunable
from rlprune.models.data import load_dataset
from rlprune.models.dense import Dense, check_model
from rlprune.models.errors import UserError
from rlprune.models.pretrain import default_epochs, default_weights_path, model_for, pretrain
from rlprune.models.train import evaluate, load_weights
from rlprune.service.jobs.events import STAGES, Event
from rlprune.service.jobs.files import refuse_existing


def object_name(obj: object, given: str | None = None) -> str:
    """The name a Python object goes by in a run's files: `<Net>`."""
    return f"<{given or type(obj).__name__}>"


def is_object_name(name: str) -> bool:
    return name.startswith("<") and name.endswith(">")


def load_dense(config: SearchConfig, on_pretrain: Callable[[Event], object] | None = None, *,
               cache: Path | None = None) -> Dense:
    """Load the data and the dense model from `config.weights`, or the cached pre-trained one
    (under `cache`, default runs/pretrained; training it once, telling `on_pretrain` of the
    stage (a `stage` event) and of each epoch (`pretrain_epoch`)).

    `config.weights` is then pinned to the weights' absolute path, so that a saved config
    (and a resume from it) finds the same file from any working folder."""
    if is_object_name(config.model) or is_object_name(config.dataset):
        raise UserError(f"this run was started from Python objects ({config.model} on "
                        f"{config.dataset}); resume it from Python with "
                        "rlprune.resume(run_dir, model=..., data=...)")
    data = load_dataset(config.dataset, config.data_dir, config.download)
    model = model_for(config.model, data)
    check_model(model, data)
    check_prunable(model, data.input_shape, config)  # before any pre-training
    path = Path(config.weights) if config.weights else default_weights_path(
        config.model, config.dataset,
        **cast(dict[str, Any], {} if cache is None else {"root": cache}))
    if config.weights or path.is_file():
        load_weights(model, path)
    else:
        refuse_existing(path, force=True, field="weights")  # writable? (else: give weights)
        model, _ = pretrain(config.model, data, path, on_epoch=_pretrain_events(
            config, on_pretrain))
        model = model.cpu()
    model.eval()
    config.weights = str(path.resolve())
    return Dense(data, model, path, evaluate(model, data.test))


def _pretrain_events(config: SearchConfig, on_pretrain: Callable[[Event], object] | None
                     ) -> Callable[[int, float], None] | None:
    """The pre-training's epoch callback as events, the stage announced first."""
    if on_pretrain is None:
        return None
    epochs = default_epochs(config.model)
    message = STAGES["pretrain"].format(steps=epochs, **config.to_json())
    on_pretrain(Event("stage", stage="pretrain", steps=epochs, message=message))

    def on_epoch(epoch: int, loss: float) -> None:
        on_pretrain(Event("pretrain_epoch", epoch=epoch + 1, epochs=epochs, loss=loss))

    return on_epoch
