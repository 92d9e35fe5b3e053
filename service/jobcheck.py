"""What the service accepts as a job, checked before it is queued (a UserError is a 422).

A job may name only registry models or `module:factory` code already importable on the
server (no code is uploaded), and dense weights only as an upload (`sha256:<hex>`, from
POST /v1/checkpoints); the weights must fit the model. The settings are SearchConfig's
(validated as the command line validates them); a baseline adds `method`, a bench
`targets`, `methods`, `seeds` and `first_seed`.
"""

from __future__ import annotations

import re
from numbers import Integral, Real
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.models.errors import UserError
from rlprune.models.imports import import_callable
from rlprune.models.registry import MODELS

BENCH_KEYS = ("targets", "methods", "seeds", "first_seed")


def _weights(value: object, runs: Path) -> str | None:
    if value is None:
        return None
    match = re.fullmatch(r"sha256:([0-9a-f]{64})", str(value))
    if match is None:
        raise UserError("weights must name an upload, 'sha256:<hex>' (POST /v1/checkpoints "
                        "returns it); server paths are not accepted")
    path = runs / "uploads" / f"{match.group(1)}.pt"
    if not path.is_file():
        raise UserError(f"no uploaded weights {value}")
    return str(path)


def _model(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise UserError("model must be a registry name or package.module:factory")
    if ":" in name:
        import_callable(name, "model")  # importable on the server, or refused
    elif name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)} or give "
                        "package.module:factory (importable on the server)")


def check_request(kind: str, config: dict, runs: Path) -> dict:
    """The job's settings, complete and checked."""
    settings = dict(config)
    extra = {k: settings.pop(k) for k in BENCH_KEYS if k in settings}
    method = settings.pop("method", None)
    if kind != "bench" and extra:
        raise UserError(f"{', '.join(extra)} belong to a bench job")
    if kind != "baseline" and method is not None:
        raise UserError("method belongs to a baseline job")
    settings["weights"] = _weights(settings.get("weights"), runs)
    if kind == "baseline":
        settings.setdefault("warmup", settings.get("episodes", SearchConfig().episodes))
    config_ = SearchConfig.with_settings(**settings)
    _model(config_.model)
    if config_.model.startswith("<") or config_.dataset.startswith("<"):
        raise UserError("a job names its model and data; Python objects are for the API")
    config_.validate()
    out = config_.to_json()
    if kind == "baseline":
        from rlprune.service.lifecycle import METHODS

        methods = METHODS[config_.granularity]
        if method not in methods or method in ("ddpg",):
            raise UserError(f"a baseline needs method, one of "
                            f"{', '.join(m for m in methods if m != 'ddpg')}")
        out["method"] = method
    if kind == "bench":
        out.update(_bench(extra, config_))
    _builds(config_)
    return out


def _bench(extra: dict, base: SearchConfig) -> dict:
    from rlprune.service.bench import METHODS

    targets = extra.get("targets", [base.target])
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, Real) and not isinstance(t, bool) for t in targets):
        raise UserError("targets must be a non-empty list of numbers")
    for target in targets:
        SearchConfig.with_settings(**{**base.to_json(), "target": target}).validate()
    seeds, first = extra.get("seeds", 1), extra.get("first_seed", 0)
    for name, value, low in (("seeds", seeds, 1), ("first_seed", first, 0)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
            raise UserError(f"{name} must be a whole number of at least {low}")
    methods = extra.get("methods")
    if methods is not None:
        known = METHODS[base.granularity]
        if not isinstance(methods, list) or not methods or any(m not in known for m in methods):
            raise UserError(f"methods must be a list from {', '.join(known)}")
    return {"targets": targets, "seeds": seeds, "first_seed": first, "methods": methods}


def _builds(config: SearchConfig) -> None:
    """The model must build for the dataset's shape, and uploaded weights load into it."""
    from rlprune.models.data import spec_of
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights

    model = build_model(config.model, **spec_of(config.dataset).model_kwargs())
    if config.weights is not None:
        load_weights(model, config.weights)
