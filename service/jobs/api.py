"""The Python API: prune a model you hold with data you hold, objects in and objects out.

    import rlprune
    data = rlprune.Data(train, val, test)   # Datasets, DataLoaders or (x, y) tensors
    result = rlprune.search(model, data, target=0.9, episodes=100)
    result.policy, result.model, result.history

Nothing is pre-trained, printed or written unless asked for: `run_dir=None` runs in memory; a
path makes the run a resumable run folder, the same as `rlprune search --run-dir` makes.
Progress goes to `callback(event)` (an `Event`); a callback that returns False stops a search
at the next episode boundary (with a `run_dir`, `resume(run_dir, ...)` continues it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from rlprune.agent.config import SearchConfig
from rlprune.env.finalize import prune_and_finetune, pruned_copy
from rlprune.env.policy import granularity_of, validate_policy
from rlprune.models.data import Data
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.service.jobs.dense_loader import is_object_name, load_dense, object_name
from rlprune.service.jobs.events import Callback, Result
from rlprune.service.jobs.files import load_policy, require_empty_folder
from rlprune.service.jobs.lifecycle import run_job, settled
from rlprune.service.jobs.resume import resume_job


def _data(data: Any) -> Data:
    if isinstance(data, Data):
        return data
    if isinstance(data, tuple | list) and len(data) == 3:
        return Data(*data)
    raise UserError(f"data is a {type(data).__name__}; give rlprune.Data(train, val, test) or "
                    "a (train, val, test) tuple")


def _job(method: str, model: nn.Module, data: Any, target: float, run_dir: str | Path | None,
         callback: Callback | None, settings: dict) -> Result:
    data = _data(data)
    names = {"model": object_name(model), "dataset": object_name(data, data.name)}
    config = settled(SearchConfig.with_settings(**{**names, **settings, "target": target}),
                     method)  # checked before run_dir is
    if run_dir is not None:
        require_empty_folder(run_dir, "run_dir")
    return run_job(config, Dense.of(model, data), method, run_dir=run_dir,
                   in_memory=run_dir is None, callback=callback)


def search(model: nn.Module, data: Any, target: float = 0.9, *,
           run_dir: str | Path | None = None, callback: Callback | None = None,
           **settings: Any) -> Result:
    """Search per-layer sparsities for `model` (trained; it is not modified) with DDPG, apply
    the best, prune the FC layers by the k-sigma rule and fine-tune.

    :param model: the trained dense network
    :param data: `rlprune.Data(train, val, test)` or a (train, val, test) tuple; the search is
        rewarded on `val`, `test` is only reported
    :param target: the global sparsity in (0, 1)
    :param run_dir: None to run in memory; a folder (new or empty) to keep a resumable run
    :param callback: gets every `Event`; returning False stops the search (resumable)
    :param settings: any `SearchConfig` field (`episodes=100`, `fc_rule="agent"`, ...)
    :return: the `Result` (`policy`, `model`, `history`, `state`, ...)
    """
    return _job("ddpg", model, data, target, run_dir, callback, settings)


def baseline(method: str, model: nn.Module, data: Any, target: float = 0.9, *,
             run_dir: str | Path | None = None, callback: Callback | None = None,
             **settings: Any) -> Result:
    """Prune with a baseline allocation (`uniform`, `global`, `lamp`, `erk`) over the same
    layers, with the same FC rule and fine-tune as `search`; the same `Result`."""
    return _job(method, model, data, target, run_dir, callback, settings)


def resume(run_dir: str | Path, model: nn.Module | None = None, data: Any = None, *,
           episodes: int | None = None, callback: Callback | None = None) -> Result:
    """Continue an interrupted run from its last checkpoint (a baseline runs again).

    A run started from Python objects needs the same `model` and `data` again (checked against
    the checkpoint); a run started by name (the CLI) loads its own.
    """
    def load(config: SearchConfig) -> Dense:
        if model is None and data is None:
            return load_dense(config)
        if model is None or data is None:
            raise UserError("give both model and data to resume, or neither")
        if not is_object_name(config.model):
            raise UserError(f"run {run_dir} was made from {config.model} on {config.dataset}; "
                            "resume it without model and data")
        return Dense.of(model, _data(data))

    return resume_job(run_dir, load, episodes=episodes, callback=callback)


def apply(policy: dict | str | Path | Result, model: nn.Module, data: Any = None,
          finetune_epochs: int = 0, *, seed: int = 0, lr: float = 0.01,
          input_shape: tuple[int, int, int] | None = None,
          on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    """A pruned copy of `model` by `policy` (a policy dict, a policy file, or a `Result`):
    weight policies mask each layer to its sparsity, channel policies remove the recorded
    channels for real (they need `data` or the `input_shape` (C, H, W) to trace the model).
    With `data`, BatchNorm statistics are re-estimated on its train split (as the search
    scored them) and the copy is fine-tuned `finetune_epochs` (weight masks held); `model`
    itself is left as it is."""
    if isinstance(policy, Result):
        policy = policy.policy or {}  # a stopped run's None: refused below as no policy
    if isinstance(policy, str | Path):
        policy = load_policy(policy)
    policy = validate_policy(policy)
    if data is None:
        if finetune_epochs:
            raise UserError("fine-tuning needs data: apply(policy, model, data, epochs)")
        if granularity_of(policy) == "channel" and input_shape is None:
            raise UserError("a channel policy needs data or input_shape=(C, H, W)")
        pruned, _ = pruned_copy(model, policy, _device_of(model), input_shape)
        return pruned
    done = prune_and_finetune(model, policy, _data(data), epochs=finetune_epochs, lr=lr,
                              seed=seed, device=_device_of(model), on_epoch=on_epoch)
    return done.model


def _device_of(model: nn.Module) -> str:
    param = next(model.parameters(), None)
    return "cpu" if param is None else str(param.device)


def export(run: str | Path | Result, path: str | Path, *, format: str = "auto",  # noqa: A002
           quantize: str = "none", qat_epochs: int = 0, force: bool = False,
           model: nn.Module | None = None, data: Any = None):
    """Write a finished run's pruned model to `path`, in the format its suffix names
    (`.rlprune`: rlprune's own file, sparse and compressed, read by `load_model`; `.pt2`: a
    torch.export archive; `.onnx`: checked in ONNX Runtime; `format`, if given, must agree),
    int8 with `quantize="int8"` (`qat_epochs`: quantization-aware training first); returns the
    measured table. A run made from Python objects needs its `model` and `data` again."""
    from rlprune.service.jobs.artifacts import export as export_run

    if isinstance(run, Result):
        if run.run_dir is None:
            raise UserError("export needs a run folder: search with run_dir=...")
        run = run.run_dir
    return export_run(run, path, format=format, quantize=quantize, qat_epochs=qat_epochs,
                      force=force, model=model, data=None if data is None else _data(data))


def load_model(path: str | Path) -> nn.Module:
    """The runnable model (on the CPU, in eval mode) in an `.rlprune` file (`export` or a run
    folder's `pruned.rlprune`), a `.pt2` torch.export archive (its `eval()` a no-op), or a
    run folder (its pruned model)."""
    from rlprune.service.jobs.artifacts import load_model as load

    return load(path)
