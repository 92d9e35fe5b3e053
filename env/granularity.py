"""What is pruned, as one object per granularity: `weight` (per-layer weight sparsity) and
`channel` (channel groups removed for real), and whatever a user registers.

A `Granularity` owns everything that differs between them: the env class the agent steps, the
refusal of a model with nothing to prune, the policy it writes and reads back, how a policy
prunes a fresh model, whether the pruned model keeps the dense architecture (which decides
how its file stores it), the line that says what a job
prunes, the settings that mean something only here, and the defaults `auto` stands for. A
third granularity is one new module that calls `register(Granularity(...))`.

The built-in ones are loaded on first use (`granularity_named`), so that the settings can
name the granularities without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from rlprune.models.errors import SettingError


@dataclass(frozen=True)
class Granularity:
    """One granularity of pruning.

    :param name: what `--granularity` calls it
    :param env_class: the Gymnasium env: `env_class(model, val, input_shape, config,
        calibration=..., device=...)`
    :param check_prunable: `check_prunable(model, input_shape, config)` refuses, from the
        architecture alone, a model in which the agent would have nothing to act on
    :param build_policy: `build_policy(env, sparsities, **common)` -> the policy of an
        allocation (`common`: model, dataset, fingerprint, method, target, accuracy, search,
        and the config)
    :param entries: `entries(policy)` -> its steps as {name, kind, owner, size, sparsity}
    :param validate: `validate(policy, bad)` -> the policy, or `bad(what)` raised
    :param pruned_copy: `pruned_copy(dense, policy, device, input_shape)` -> (a pruned copy,
        its weight masks to hold while fine-tuning)
    :param keeps_architecture: the pruned model is the dense architecture with zeros (its
        file then stores the weights sparse, with how to rebuild the network, and `.pt`
        state_dicts fit it); False: a new network (stored as a torch.export program)
    :param summary: `summary(config, env)` -> what a job prunes, in one line
    :param unit: what an agent step's size counts (`params`, `channels`), for fingerprints
    :param only_settings: settings that mean something only at this granularity
    :param proxy: the proxy path `auto` stands for
    :param reward: the reward `auto` stands for
    :param proxies: the proxy paths it can use
    :param artifact: what its deployable file holds, for the result table ("sparse file")
    :param export_hint: the command that writes the deployable file (`{run}`: the run folder)
    :param speed_note: what its pruning does to speed, in one line ("" if nothing to say)
    """

    name: str
    env_class: Callable[..., Any]
    check_prunable: Callable[..., None]
    build_policy: Callable[..., dict]
    entries: Callable[[dict], list[dict]]
    validate: Callable[[dict, Callable[[str], Exception]], dict]
    pruned_copy: Callable[..., tuple[Any, dict]]
    summary: Callable[[Any, Any], str]
    keeps_architecture: bool = True
    unit: str = "params"
    only_settings: tuple[str, ...] = ()
    proxy: str = "fast"
    reward: str = "loss"
    proxies: tuple[str, ...] = ("plain", "fast")
    artifact: str = "pruned file"
    export_hint: str = "rlprune export-model {run} --out model.rlprune"
    speed_note: str = ""


GRANULARITIES: dict[str, Granularity] = {}
# the built-in granularities, imported (and so registered) on first use
BUILT_IN = {"weight": "rlprune.env.weight_mode", "channel": "rlprune.env.channel_mode"}


def register(granularity: Granularity) -> Granularity:
    """Add `granularity` to the registry (a name registered again is replaced)."""
    GRANULARITIES[granularity.name] = granularity
    return granularity


def unregister(name: str) -> None:
    GRANULARITIES.pop(name, None)


def granularity_names() -> tuple[str, ...]:
    """Every granularity a job may name: the built-in ones and the registered ones."""
    return tuple(dict.fromkeys([*BUILT_IN, *GRANULARITIES]))


def granularity_named(name: str) -> Granularity:
    """The granularity `name` (a built-in one loaded on first use)."""
    if name not in GRANULARITIES and name in BUILT_IN:
        import_module(BUILT_IN[name])
    if name not in GRANULARITIES:
        raise SettingError("granularity", f"must be one of {', '.join(granularity_names())}, "
                           f"got {name!r}")
    return GRANULARITIES[name]


def settings_of_other_granularities(name: str) -> dict[str, str]:
    """The settings that belong to another granularity than `name`: setting -> its owner."""
    own = set(granularity_named(name).only_settings)
    out: dict[str, str] = {}
    for other in granularity_names():
        if other != name:
            for setting in granularity_named(other).only_settings:
                if setting not in own:
                    out.setdefault(setting, other)
    return out
