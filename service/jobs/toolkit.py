"""Two small public helpers for scripts that study rlprune by hand (the studies in studies/):
the dense model and data of a registry model by name, and the policy of an allocation an
environment played. `rlprune.load_dense` and `rlprune.policy_of` re-export them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlprune.agent.config import SearchConfig
from rlprune.env.granularity import granularity_named
from rlprune.env.policy import validate_policy
from rlprune.models.dense import Dense
from rlprune.models.registry import arch_fingerprint
from rlprune.service.jobs.dense_loader import load_dense as _load_dense


def load_dense(config: SearchConfig | None = None, *, cache: str | Path | None = None,
               **settings: Any) -> Dense:
    """The trained dense model and its data by name, as `rlprune search --model M --dataset D`
    gets them: the data loaded, the weights read from `weights`, or else the cached
    pre-trained model (trained on first use and cached, as the CLI does).

    :param config: a `SearchConfig` to read `model`, `dataset`, `weights`, `data_dir` and
        `download` from (its `weights` is then pinned to the file's absolute path, as a job
        pins it); None: a default one with `settings` applied
    :param cache: the folder of cached pre-trained models (default `runs/pretrained`, relative
        to the working folder)
    :param settings: `SearchConfig` fields for a config made here (`model="lenet5"`,
        `dataset="digits"`, `weights="dense.pt"`, ...); not allowed with `config`
    :return: a `Dense`: `model` (on the CPU, in eval mode), `data` (an `rlprune.Data`: its
        `train`, `val` and `test` splits hold tensors `x`, `y`), `input_shape` (C, H, W),
        `weights` (the file) and `test_accuracy`
    """
    if config is not None and settings:
        raise TypeError("give a config or settings, not both")
    if config is None:
        config = SearchConfig.with_settings(**settings)
    return _load_dense(config, cache=None if cache is None else Path(cache))


def policy_of(env: Any, sparsities: dict[str, float], *, model: str = "<model>",
              dataset: str = "<data>", method: str = "custom") -> dict:
    """The policy (format `rlprune.policy/2`) of an allocation on an environment, as a job
    writes it: what `rlprune.apply` takes and `rlprune.save_policy` writes. Accuracies and
    search details are left empty.

    :param env: the `rlprune.PruningEnv` (weight mode) or `rlprune.ChannelPruningEnv` the
        allocation is for (its layers, FC rule, budget and settings)
    :param sparsities: every layer's (or channel group's) sparsity by name, as an episode's
        last step reports them (`info["sparsities"]`) or `env.sparsities(counts)` gives them
    :param model: the model's name recorded in the policy
    :param dataset: the dataset's name recorded in the policy
    :param method: the method recorded in the policy (a free label)
    :return: the policy dict, checked
    """
    c = env.config
    fingerprint = arch_fingerprint(env.model)  # masks change no name or shape
    policy = granularity_named(c.granularity).build_policy(
        env, sparsities, config=c, model=model, dataset=dataset, fingerprint=fingerprint,
        method=method, accuracy={}, search={})
    return validate_policy(policy)
