"""The `rlprune` sub-commands on existing runs and policies: list, status, export, apply."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlprune.models.errors import SettingError, UserError


def cmd_list(args: argparse.Namespace) -> int:
    from rlprune.service.jobs.run_folder import DamagedRun, list_jobs

    if args.server:
        from rlprune.service.cli.service_commands import remote_list

        return remote_list(args)

    jobs = list_jobs()
    if not jobs:
        print("no runs under runs/")
        return 0
    print(f"{'run':<48}{'state':<13}{'episodes':>10}{'best reward':>13}{'sparsity':>10}")
    for job in jobs:
        try:
            s = job.status()
        except DamagedRun as exc:  # one damaged run never hides the others
            print(f"{job.path.name:<48}{'damaged':<13}  {exc}")
            continue
        best = s.get("best_reward")
        sparsity = s.get("achieved_sparsity")
        method = s.get("method", "ddpg")
        episodes = (f"{method:>10}" if method != "ddpg" else  # a baseline has none
                    f"{s.get('episodes_done', 0)!s:>5}/{s.get('episodes', '?')!s:<4}")
        print(f"{job.path.name:<48}{s['state']:<13}{episodes}"
              f"{'' if best is None else f'{best:.4f}':>13}"
              f"{'' if sparsity is None else f'{sparsity:.4f}':>10}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rlprune.service.cli.console import print_json
    from rlprune.service.jobs.run_folder import Job

    if args.server:
        from rlprune.service.cli.service_commands import remote_status

        return remote_status(args)

    job = Job.open(args.run)
    status = job.status()
    status["run"] = str(job.path)
    print_json(status)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rlprune.service.jobs.files import load_policy, policy_text, refuse_existing, save_policy
    from rlprune.service.jobs.run_folder import Job

    if args.server:
        from rlprune.service.cli.service_commands import remote_export

        return remote_export(args)

    job = Job.open(args.run)
    source = job.path / "policy.json"
    if not source.is_file():
        raise UserError(f"run {job.path} has no policy yet (state: {job.status()['state']})")
    policy = load_policy(source)
    if args.out is None:
        print(policy_text(policy, args.format), end="")
        return 0
    out = Path(args.out)
    refuse_existing(out, args.force)
    save_policy(policy, out, args.format)
    print(f"wrote {out}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from rlprune.env.channel_checks import check_channel_policy
    from rlprune.env.finalize import prune_and_finetune
    from rlprune.env.policy import granularity_of, policy_masks
    from rlprune.models.data import load_dataset
    from rlprune.models.dense import check_model
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights
    from rlprune.service.cli.console import Progress
    from rlprune.service.jobs.files import load_policy, refuse_existing
    from rlprune.service.jobs.lifecycle import Event
    from rlprune.service.jobs.model_file import write_model
    from rlprune.service.jobs.run_model import rebuild_spec

    if args.weights is None:
        raise UserError("apply needs the trained dense weights: --weights PATH")
    policy = load_policy(args.policy)
    out = Path(args.out)
    refuse_existing(out, args.force)
    fmt = _apply_format(out, policy)
    if args.finetune_epochs < 0:
        raise UserError("--finetune-epochs must be >= 0")
    dataset = args.dataset or policy["dataset"]
    data = load_dataset(dataset, args.data_dir, args.download)
    assert data.spec is not None  # set by Data.__post_init__
    model = build_model(args.model, **data.spec.model_kwargs())
    load_weights(model, args.weights)
    check_model(model, data)
    channel = granularity_of(policy) == "channel"
    if channel:  # refuse a policy that does not fit, before any work
        check_channel_policy(model, data.input_shape, policy)
    else:
        policy_masks(model, policy)
    progress = Progress()
    epochs = args.finetune_epochs

    def on_epoch(epoch: int, loss: float) -> None:
        progress(Event("finetune_epoch", epoch=epoch + 1, epochs=epochs, loss=loss))

    try:
        done = prune_and_finetune(model, policy, data, epochs=epochs, seed=args.seed,
                                  on_epoch=on_epoch)
    finally:
        progress.close()
    meta = {"model": args.model, "dataset": dataset,
            "accuracy": {"test": done.finetuned_accuracy}}
    if not channel:
        meta["policy"] = {n: float((m.weight == 0).sum()) / m.weight.numel()
                          for n, m in done.model.named_modules()
                          if n in {layer["name"] for layer in policy["layers"]}}
    write_model(out, done.model.cpu().eval(), meta, fmt=fmt, input_shape=data.input_shape,
                rebuild=rebuild_spec(args.model, data, policy))
    print(f"applied {args.policy} ({policy['method']}) to {args.model}: "
          f"{_what(done.model, policy)}; test accuracy "
          f"pruned {100 * done.pruned_accuracy:.2f}%, fine-tuned "
          f"{100 * done.finetuned_accuracy:.2f}% ({epochs} epochs)")
    print(f"saved {out}")
    return 0


def _what(model, policy: dict) -> str:
    """What applying `policy` did, for the line `apply` prints."""
    from rlprune.env.policy import granularity_of, policy_sparsity

    if granularity_of(policy) != "channel":
        return f"sparsity {policy_sparsity(policy):.4f}"
    params = sum(p.numel() for p in model.parameters())
    return (f"{sum(len(g['removed']) for g in policy['groups'])} channels removed, "
            f"{params:,} parameters left")


def _apply_format(out: Path, policy: dict):
    """The format `--out`'s suffix names; a `.pt` state_dict only where the pruned model keeps
    the dense architecture (a channel policy makes a new network)."""
    from rlprune.env.granularity import granularity_named
    from rlprune.env.policy import granularity_of
    from rlprune.service.jobs.model_formats import (
        APPLY_FORMATS,
        STATE_DICT,
        format_of,
        suffixes_text,
    )

    fmt = format_of(out, formats=APPLY_FORMATS, setting="out")
    kind = granularity_named(granularity_of(policy))
    if fmt == STATE_DICT and not kind.keeps_architecture:
        others = tuple(f for f in APPLY_FORMATS if f != STATE_DICT)
        raise SettingError("out", f"{out.name!r}: a {kind.name} policy makes a new network, "
                           f"which a state_dict (.pt) cannot hold; end it in "
                           f"{suffixes_text(others)}")
    return fmt


def cmd_export_model(args: argparse.Namespace) -> int:
    from rlprune.service.cli.console import Progress
    from rlprune.service.cli.flags import settings_from
    from rlprune.service.jobs.artifacts import export, table
    from rlprune.service.jobs.export_config import ExportConfig
    from rlprune.service.jobs.lifecycle import Event

    settings = settings_from(args, ExportConfig)
    settings.validate()  # before the progress bar shows
    progress = Progress()
    epochs = settings.qat_epochs

    def on_epoch(epoch: int, loss: float) -> None:
        progress(Event("finetune_epoch", epoch=epoch + 1, epochs=epochs, loss=loss))

    try:
        out = export(args.run, settings.path, format=settings.format,
                     quantize=settings.quantize, qat_epochs=epochs, force=settings.force,
                     on_epoch=on_epoch)
    finally:
        progress.close()
    print(table(out))
    print(f"wrote {out.path}")
    return 0


HANDLERS = {"list": cmd_list, "status": cmd_status, "export": cmd_export, "apply": cmd_apply,
            "export-model": cmd_export_model}
