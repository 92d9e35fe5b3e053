"""rlprune: reinforcement-learning-driven pruning of PyTorch CNNs.

    import rlprune
    data = rlprune.Data(train, val, test)       # torch Datasets, DataLoaders or (x, y) tensors
    result = rlprune.search(model, data, target=0.9, episodes=100)
    pruned = rlprune.apply(result.policy, model)

This module only re-exports the public API (loaded on first use, so that `rlprune --help`
stays instant); the code lives in `rlprune.models`, `rlprune.env`, `rlprune.agent` and
`rlprune.service`.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlprune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "Data": "rlprune.models.data",
    "UserError": "rlprune.models.errors",
    "EnvConfig": "rlprune.env.config",
    "PruningEnv": "rlprune.env.pruning_env",
    "ChannelPruningEnv": "rlprune.env.channel_env",
    "SearchConfig": "rlprune.agent.config",
    "Event": "rlprune.service.jobs.events",
    "Result": "rlprune.service.jobs.events",
    "search": "rlprune.service.jobs.api",
    "baseline": "rlprune.service.jobs.api",
    "resume": "rlprune.service.jobs.api",
    "apply": "rlprune.service.jobs.api",
    "export": "rlprune.service.jobs.api",
    "load_model": "rlprune.service.jobs.api",
    "measure_latency_table": "rlprune.service.jobs.latency_lut",
    "load_policy": "rlprune.service.jobs.files",
    "save_policy": "rlprune.service.jobs.files",
    # for scripts that study rlprune by hand (studies/): a registry model's dense model and
    # data by name, and the policy of an allocation an env played
    "load_dense": "rlprune.service.jobs.toolkit",
    "policy_of": "rlprune.service.jobs.toolkit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
