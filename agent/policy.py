"""The exported sparsity policy (format `rlprune.policy/1`): build, save, load, apply."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rlprune.env.layers import Network
from rlprune.env.masks import count_for, magnitude_mask, mean_distance_mask
from rlprune.models.errors import UserError
from rlprune.service.jobs import write_text_atomic
from torch import nn

POLICY_FORMAT = "rlprune.policy/1"
FORMATS = ("json", "yaml")


def build_policy(*, model: str, dataset: str, fingerprint: str, method: str, target: float,
                 scope: str, net: Network, sparsities: dict[str, float], fc_k: float | None,
                 costs: dict, accuracy: dict, search: dict | None = None,
                 fc_rule: str = "3sigma") -> dict:
    layers = [{"name": layer.name, "kind": layer.kind, "params": layer.params,
               "sparsity": sparsities.get(layer.name, 0.0), "owner": layer.owner}
              for layer in net.layers]
    pruned = sum(count_for(layer["params"], layer["sparsity"]) for layer in layers)
    return {
        "format": POLICY_FORMAT,
        "model": model, "dataset": dataset, "arch_fingerprint": fingerprint,
        "method": method,
        "target": {"sparsity": target, "scope": scope},
        "layers": layers,
        "fc_rule": {"kind": fc_rule, "k": fc_k},
        "achieved": {"sparsity": pruned / net.prunable, "prunable_weights": net.prunable,
                     "params_dense": costs["params"]["dense"],
                     "params_nonzero": costs["params"]["nonzero"],
                     "flops_dense": costs["flops"]["dense"],
                     "flops_nonzero": costs["flops"]["nonzero"]},
        "accuracy": accuracy,
        "search": search,
    }


def save_policy(policy: dict, path: str | Path, fmt: str = "json") -> None:
    if fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        text = json.dumps(policy, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(policy, sort_keys=False)
    write_text_atomic(path, text)


def load_policy(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"policy {path} does not exist")
    import yaml

    try:
        # YAML is a superset of JSON, so one reader takes both formats.
        policy = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"policy {path} is not JSON or YAML ({exc.__class__.__name__})") from None
    if not isinstance(policy, dict) or policy.get("format") != POLICY_FORMAT:
        raise UserError(f"policy {path} is not an {POLICY_FORMAT} file")
    for layer in policy.get("layers", []):
        if not {"name", "params", "sparsity", "owner"} <= set(layer):
            raise UserError(f"policy {path}: a layer entry lacks name/params/sparsity/owner")
        if not 0.0 <= float(layer["sparsity"]) <= 1.0:
            raise UserError(f"policy {path}: layer {layer['name']} has sparsity outside [0, 1]")
    return policy


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
