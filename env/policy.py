"""The sparsity policy (format `rlprune.policy/1`): build it, check it, turn it into masks.

A policy is plain data (a dict that JSON and YAML hold); files are read and written by the
service (`rlprune.service.jobs.files`).
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, TypeGuard

import torch
from torch import nn

from rlprune.env.granularity import granularity_named, granularity_names
from rlprune.env.layers import Network
from rlprune.env.masks import count_for, magnitude_mask, mean_distance_mask
from rlprune.models.errors import UserError

POLICY_FORMAT = "rlprune.policy/2"
READABLE = ("rlprune.policy/1", POLICY_FORMAT)  # /1: weight policies before `granularity`
OWNERS = ("agent", "fc-rule", "none")


def build_policy(*, model: str, dataset: str, fingerprint: str, method: str, target: float,
                 scope: str, net: Network, sparsities: dict[str, float], fc_k: float | None,
                 costs: dict, accuracy: dict, search: dict | None = None,
                 fc_rule: str = "3sigma") -> dict:
    layers: list[dict[str, Any]] = [{"name": layer.name, "kind": layer.kind, "params": layer.params,
               "sparsity": sparsities.get(layer.name, 0.0), "owner": layer.owner}
              for layer in net.layers]
    pruned = sum(count_for(layer["params"], layer["sparsity"]) for layer in layers)
    return {
        "format": POLICY_FORMAT, "granularity": "weight",
        "model": model, "dataset": dataset, "arch_fingerprint": fingerprint,
        "method": method,
        "target": {"sparsity": target, "scope": scope},
        "layers": layers,
        "fc_rule": {"kind": fc_rule, "k": fc_k},
        "achieved": {"sparsity": pruned / net.prunable, "prunable_weights": net.prunable,
                     **_cost_fields(costs)},
        "accuracy": accuracy,
        "search": search,
    }


def build_channel_policy(*, model: str, dataset: str, fingerprint: str, method: str,
                         target: float, budget: str, criterion: str, groups: list,
                         removed: dict[str, list[int]], achieved: float, costs: dict,
                         accuracy: dict, search: dict | None = None) -> dict:
    """A channel policy: per group (named by its root layer) the root channels removed."""
    entries = [{"name": g.name, "kind": g.kind, "channels": g.channels,
                "removed": removed.get(g.name, []),
                "sparsity": len(removed.get(g.name, [])) / g.channels, "layers": g.layers}
               for g in groups]
    return {
        "format": POLICY_FORMAT, "granularity": "channel", "budget": budget,
        "criterion": criterion,
        "model": model, "dataset": dataset, "arch_fingerprint": fingerprint,
        "method": method,
        "target": {"sparsity": target, "budget": budget},
        "groups": entries,
        "achieved": {"sparsity": achieved, "budget": budget, **_cost_fields(costs)},
        "accuracy": accuracy,
        "search": search,
    }


def _cost_fields(costs: dict) -> dict[str, int]:
    """`params_dense`, `params_nonzero`, `flops_dense`, `flops_nonzero` from a costs table."""
    return {f"{kind}_{which}": costs[kind][which]
            for kind in ("params", "flops") for which in ("dense", "nonzero")}


def granularity_of(policy: dict) -> str:
    return policy.get("granularity", "weight")


def entries(policy: dict) -> list[dict]:
    """The policy's steps as {name, kind, owner, size, sparsity} (its granularity's reading)."""
    return granularity_named(granularity_of(policy)).entries(policy)


def layer_entries(policy: dict) -> list[dict]:
    """A weight policy's layers as entries (size: weights)."""
    return [{"name": la["name"], "kind": la.get("kind", "?"), "owner": la["owner"],
             "size": la["params"], "sparsity": la["sparsity"]} for la in policy["layers"]]


def group_entries(policy: dict) -> list[dict]:
    """A channel policy's groups as entries (size: channels)."""
    return [{"name": g["name"], "kind": g["kind"], "owner": "agent",
             "size": g["channels"], "sparsity": g["sparsity"]} for g in policy["groups"]]


def _number(value: object) -> TypeGuard[Real]:
    return isinstance(value, Real) and not isinstance(value, bool)


def validate_policy(policy: object, source: str = "policy") -> dict:
    """`policy` if it is a well-formed rlprune policy, else one UserError naming `source` and
    what is wrong (checked: format, model, dataset, method, target, and every layer's name,
    params, sparsity and owner, names unique)."""
    def bad(what: str) -> UserError:
        return UserError(f"{source}: {what}")

    if not isinstance(policy, dict) or policy.get("format") not in READABLE:
        raise bad(f"not an rlprune policy (no \"format\": \"{POLICY_FORMAT}\")")
    known = granularity_names()
    if granularity_of(policy) not in known:
        raise bad(f"\"granularity\" must be {' or '.join(known)}, got "
                  f"{policy.get('granularity')!r}")
    for key in ("model", "dataset", "method"):
        if not isinstance(policy.get(key), str) or not policy[key]:
            raise bad(f"\"{key}\" must be a non-empty string, got {policy.get(key)!r}")
    target = policy.get("target")
    if not isinstance(target, dict) or not _number(target.get("sparsity")):
        raise bad("\"target\" must be {\"sparsity\": number, \"scope\": ...}")
    return granularity_named(granularity_of(policy)).validate(policy, bad)


def validate_layers(policy: dict, bad: Callable[[str], Exception]) -> dict:
    """A weight policy's layers checked: names unique, params, sparsity and owner."""
    layers = policy.get("layers")
    if not isinstance(layers, list) or not layers:
        raise bad("\"layers\" must be a non-empty list of layer entries")
    seen = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise bad(f"layer entry {i} is a {type(layer).__name__}, not a mapping")
        name = layer.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"layer entry {i} has no name")
        if name in seen:
            raise bad(f"layer {name} appears twice")
        seen.add(name)
        params = layer.get("params")
        if not isinstance(params, Integral) or isinstance(params, bool) or params < 1:
            raise bad(f"layer {name}: \"params\" must be a positive whole number, "
                      f"got {params!r}")
        sparsity = layer.get("sparsity")
        if not _number(sparsity) or not 0.0 <= float(sparsity) <= 1.0:
            raise bad(f"layer {name}: \"sparsity\" must be a number in [0, 1], "
                      f"got {sparsity!r}")
        if layer.get("owner") not in OWNERS:
            raise bad(f"layer {name}: \"owner\" must be one of {', '.join(OWNERS)}, "
                      f"got {layer.get('owner')!r}")
    return policy


def validate_groups(policy: dict, bad: Callable[[str], Exception]) -> dict:
    """A channel policy's groups checked: names unique, channels, removed channels."""
    groups = policy.get("groups")
    if not isinstance(groups, list) or not groups:
        raise bad("\"groups\" must be a non-empty list of channel groups")
    seen = set()
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("name"), str):
            raise bad(f"group entry {i} is not a mapping with a name")
        name, n, removed = group["name"], group.get("channels"), group.get("removed")
        if name in seen:
            raise bad(f"group {name} appears twice")
        seen.add(name)
        if not isinstance(n, Integral) or isinstance(n, bool) or n < 1:
            raise bad(f"group {name}: \"channels\" must be a positive whole number, got {n!r}")
        if (not isinstance(removed, list) or not all(
                isinstance(r, Integral) and not isinstance(r, bool) and 0 <= int(r) < int(n)
                for r in removed) or len(set(removed)) != len(removed)):
            raise bad(f"group {name}: \"removed\" must list distinct channels in [0, {n})")
        if len(removed) >= n:
            raise bad(f"group {name}: removes all {n} channels; a group keeps at least one")
    return policy


def policy_sparsity(policy: dict) -> float:
    """The fraction of the policy's layers' weights it prunes (whole weights per layer)."""
    layers = policy["layers"]
    pruned = sum(count_for(layer["params"], float(layer["sparsity"])) for layer in layers)
    return pruned / sum(layer["params"] for layer in layers)


def policy_masks(model: nn.Module, policy: dict) -> dict[str, torch.Tensor]:
    """Masks that give every layer exactly the policy's sparsity on `model`'s weights.

    Agent (and baseline) layers lose their smallest |w|; FC-rule layers lose the weights
    closest to their mean, which on the weights the policy came from is the k-sigma mask.
    """
    modules = dict(model.named_modules())
    problems = []
    for layer in policy["layers"]:
        module = modules.get(layer["name"])
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            problems.append(f"{layer['name']} (not in the model)")
        elif weight.numel() != layer["params"]:
            problems.append(f"{layer['name']} ({weight.numel()} weights, policy says "
                            f"{layer['params']})")
    if problems:
        raise UserError("policy does not fit the model: " + ", ".join(problems[:5])
                        + (" …" if len(problems) > 5 else ""))
    masks = {}
    for layer in policy["layers"]:
        weight = modules[layer["name"]].weight
        n = count_for(weight.numel(), float(layer["sparsity"]))
        if layer["owner"] == "fc-rule":
            masks[layer["name"]] = mean_distance_mask(weight, n)
        else:
            masks[layer["name"]] = magnitude_mask(weight, n / weight.numel())
    return masks
