"""A run's pruned model, written and read in one place: `write_run_model` writes the run
folder's `pruned.rlprune`; `run_model` reads it back (or the `pruned.pt` of a run made before
that name) as a runnable `nn.Module`; `rebuild_spec` says how an `.rlprune` file rebuilds the
network, where it can."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from rlprune.agent.config import SearchConfig
from rlprune.env.granularity import granularity_named
from rlprune.env.policy import granularity_of
from rlprune.models.data import Data
from rlprune.models.dense import Dense
from rlprune.models.registry import build_model
from rlprune.models.train import load_program, load_state, read_weights
from rlprune.service.jobs.dense_loader import is_object_name
from rlprune.service.jobs.model_file import load_model, save_model
from rlprune.service.jobs.run_folder import MODEL_FILE, Job


def rebuild_spec(model: str, data: Data, policy: dict) -> dict | None:
    """How `load_model` rebuilds the architecture of `model` (a registry name or factory)
    pruned by `policy`, or None when it cannot (a granularity that makes a new network, or a
    model given as a Python object): a program is stored then."""
    if not granularity_named(granularity_of(policy)).keeps_architecture or is_object_name(
            model):
        return None
    assert data.spec is not None  # set by Data.__post_init__
    return {"model": model, "kwargs": data.spec.model_kwargs()}


def write_run_model(run: Path, model: nn.Module, meta: dict, *, config: SearchConfig,
                    data: Data, policy: dict) -> Path:
    """The run's pruned model as `run/pruned.rlprune`; returns the path."""
    path = run / MODEL_FILE
    meta = {**meta, "granularity": granularity_of(policy), "quantize": "none"}
    save_model(path, _cpu_eval(model), meta, rebuild=rebuild_spec(config.model, data, policy),
               input_shape=data.input_shape)
    return path


def _cpu_eval(model: nn.Module) -> nn.Module:
    """`model` on the CPU in eval mode, copied where it is not (the job's model stays as
    it is: on its device, in its mode)."""
    if model.training or any(t.device.type != "cpu" for t in model.state_dict().values()):
        model = copy.deepcopy(model).cpu().eval()
    return model


def run_model(job: Job, config: SearchConfig, policy: dict, dense: Dense) -> nn.Module:
    """The finished run's pruned model, runnable, in eval mode, on the CPU: for a
    granularity that keeps the architecture, the dense network (rebuilt by name, or a copy of
    `dense.model` for a Python object) with the file's weights, so that it trains as any
    module; otherwise the stored program."""
    path = job.model_file
    old = path.suffix == ".pt"  # a run made before pruned.rlprune
    if not granularity_named(granularity_of(policy)).keeps_architecture:
        return load_program(path)[0] if old else load_model(path)
    assert dense.data.spec is not None  # set by Data.__post_init__
    model = (copy.deepcopy(dense.model) if is_object_name(config.model)
             else build_model(config.model, **dense.data.spec.model_kwargs()))
    state = read_weights(path)["state_dict"] if old else load_model(path).state_dict()
    load_state(model, state, f"the run's model file {path}")
    return model.cpu().eval()
