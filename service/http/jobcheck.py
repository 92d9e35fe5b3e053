"""What the service accepts as a job, checked before it is queued (a UserError is a 422).

A job may name only registry models or `module:factory` code already importable on the
server (no code is uploaded), dense weights only as an upload (`sha256:<hex>`, from
POST /v1/checkpoints), and data only from the server's own places: the built-in datasets,
a factory, or an `imagefolder:` inside one of the service's `--data-root` folders. The
settings are SearchConfig's (validated as the command line validates them); a baseline adds
`method`, a bench `targets`, `methods`, `seeds` and `first_seed`.

User code (a `module:factory` model or dataset) never runs in the server's process: it is
imported, built and checked in a child process (`python -m rlprune.service.http.worker --check`)
with a time limit, so a factory that aborts, exits, hangs or crashes refuses its own job and
nothing else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.models.errors import UserError
from rlprune.models.registry import MODELS
from rlprune.models.settings import received
from rlprune.service.bench.plan import BenchConfig
from rlprune.service.http.settings import ServeConfig

BENCH_KEYS = ("targets", "methods", "seeds", "first_seed")
DEFAULT_DATA_DIR = SearchConfig().data_dir


def _weights(value: object, runs: Path) -> str | None:
    if value is None:
        return None
    match = re.fullmatch(r"sha256:([0-9a-f]{64})", str(value))
    if match is None:
        raise UserError(f"weights must name an upload, 'sha256:<hex>' (POST /v1/checkpoints "
                        f"returns it), got {received(value)}; server paths are not accepted")
    path = runs / "uploads" / f"{match.group(1)}.pt"
    if not path.is_file():
        raise UserError(f"no uploaded weights {value}")
    return str(path)


def is_user_code(name: str) -> bool:
    """A `package.module:factory` name (not a registry name, not `imagefolder:PATH`)."""
    return ":" in name and not name.startswith("imagefolder:")


def _model_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise UserError("model must be a registry name or package.module:factory")
    if not is_user_code(name) and name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)} or give "
                        "package.module:factory (importable on the server)")


def _data_places(config: SearchConfig, serve: ServeConfig) -> str:
    """The data folder the job reads (the service's own); refuses a server path of the
    request's choosing."""
    if config.data_dir != DEFAULT_DATA_DIR:
        raise UserError(f"data_dir {config.data_dir!r}: the service decides where its data "
                        "lives (its first --data-root); a job cannot name a server folder")
    if config.download and not serve.allow_download:
        raise UserError("download: this service does not download data for jobs (start it "
                        "with --allow-download)")
    if config.dataset.startswith("imagefolder:"):
        root = Path(config.dataset.split(":", 1)[1]).expanduser().resolve()
        allowed = [Path(r).resolve() for r in serve.data_roots]
        if not any(root.is_relative_to(r) for r in allowed):
            where = ", ".join(map(str, allowed)) or "none given"
            raise UserError(f"dataset {config.dataset!r}: the service reads image folders only "
                            f"inside its --data-root folders ({where})")
    return str(serve.data_dir().resolve())


def check_request(kind: str, config: dict, serve: ServeConfig) -> dict:
    """The job's settings, complete and checked."""
    runs = Path(serve.runs).resolve()
    settings = dict(config)
    extra = {k: settings.pop(k) for k in BENCH_KEYS if k in settings}
    method = settings.pop("method", None)
    if kind != "bench" and extra:
        raise UserError(f"{', '.join(extra)} belong to a bench job")
    if kind != "baseline" and method is not None:
        raise UserError(f"method belongs to a baseline job (got {received(method)} in a {kind} "
                        "job)")
    settings["weights"] = _weights(settings.get("weights"), runs)
    if kind == "baseline":
        settings.setdefault("warmup", settings.get("episodes", SearchConfig().episodes))
    config_ = SearchConfig.with_settings(**settings)
    _model_name(config_.model)
    if config_.model.startswith("<") or config_.dataset.startswith("<"):
        raise UserError("a job names its model and data; Python objects are for the API")
    config_.validate()
    data_dir = _data_places(config_, serve)
    out = config_.to_json()
    if kind == "baseline":
        from rlprune.service.jobs.lifecycle import job_methods, settled

        methods = job_methods(config_.granularity)
        if method not in methods or method in ("ddpg",):
            raise UserError(f"a baseline needs method, one of "
                            f"{', '.join(m for m in methods if m != 'ddpg')}")
        settled(config_, method)  # what the method refuses (an agent, for one)
        out["method"] = method
    if kind == "bench":
        out.update(_bench(extra, config_))
    config_.data_dir = out["data_dir"] = data_dir
    if is_user_code(config_.model) or is_user_code(config_.dataset):
        check_in_child(config_, serve.check_timeout_s)
    else:
        check_job(config_)
    return out


def _bench(extra: dict, base: SearchConfig) -> dict:
    from rlprune.models.settings import typed_fields

    given = {"seeds": 1, "first_seed": 0, "targets": [base.target], **extra}
    plan = BenchConfig(**typed_fields(BenchConfig, given))
    plan.validate(base)
    return {"targets": list(plan.targets), "seeds": plan.seeds, "first_seed": plan.first_seed,
            "methods": None if plan.methods is None else list(plan.methods)}


def check_job(config: SearchConfig) -> None:
    """The model must build for the dataset's shape, take uploaded weights, and hold
    something to prune. Runs user code: the service calls it in a child process only."""
    from rlprune.env.make import check_prunable
    from rlprune.models.data import spec_of
    from rlprune.models.dense import check_model
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights

    if is_user_code(config.dataset):
        from rlprune.models.data import load_dataset

        data = load_dataset(config.dataset, config.data_dir)
        spec = data.spec
        assert spec is not None  # set by Data.__post_init__
    else:
        data, spec = None, spec_of(config.dataset)
    model = build_model(config.model, **spec.model_kwargs())
    if config.weights is not None:
        load_weights(model, config.weights)
    if data is not None:
        check_model(model, data)
    check_prunable(model, spec.input_shape, config)


def check_in_child(config: SearchConfig, timeout_s: float) -> None:
    """`check_job` in a child process with a time limit; its refusal, crash or hang is a
    UserError naming what happened."""
    names = " and ".join(f"{what} {name!r}" for what, name in
                         (("model", config.model), ("dataset", config.dataset))
                         if is_user_code(name))
    proc = subprocess.Popen([sys.executable, "-m", "rlprune.service.http.worker", "--check"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(json.dumps(config.to_json()).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise UserError(f"checking {names} on the server did not finish within "
                        f"{timeout_s:g} s (the factory or its import hangs?)") from None
    code = proc.returncode
    if code == 0:
        return
    lines = err.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if code == 2 and last.startswith("rlprune: error: "):
        raise UserError(last.removeprefix("rlprune: error: "))
    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in
           signal.valid_signals() else f"exited with code {code}")
    detail = f": {last[:300]}" if last else ""
    raise UserError(f"checking {names} on the server failed: the check process {how} (the "
                    f"user code crashed or exited){detail}")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the check and whatever it started (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
