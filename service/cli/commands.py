"""What each job-making `rlprune` sub-command does, given parsed arguments (pretrain, inspect,
search, baseline, resume, bench); the commands on finished runs are in `run_commands`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rlprune.service.bench.plan import BenchConfig
from rlprune.service.cli import run_commands, service_commands
from rlprune.service.cli.flags import (
    BASELINE_SETTINGS,
    BENCH_SETTINGS,
    PRETRAIN_SETTINGS,
    SEARCH_SETTINGS,
    config_from,
    settings_from,
)
from rlprune.service.jobs.files import (
    refuse_existing,
    require_empty_folder,
    require_writable_folder,
)
from rlprune.service.jobs.pretrain_config import PretrainConfig
from rlprune.service.jobs.run_folder import RUNS_ROOT


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rlprune.models.data import load_dataset
    from rlprune.models.dense import check_model
    from rlprune.models.pretrain import default_epochs, default_weights_path, model_for, pretrain
    from rlprune.models.train import resolve_device
    from rlprune.service.cli.console import Progress
    from rlprune.service.jobs.events import Event

    settings = settings_from(args, PretrainConfig)
    settings.validate()
    source = config_from(args, PRETRAIN_SETTINGS)
    source.validate()  # the seed's limits, the device's choices
    _validate_names(args.model, args.dataset)
    out = Path(settings.out) if settings.out else default_weights_path(args.model, args.dataset,
                                                                       args.seed)
    refuse_existing(out, settings.force)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir, args.download)
    check_model(model_for(args.model, data), data)
    epochs = settings.epochs or default_epochs(args.model)
    start = time.perf_counter()
    progress = Progress()
    progress(Event("stage", stage="pretrain", steps=epochs, message=(
        f"training {args.model} on {args.dataset} for {epochs} epochs on {device}")))

    def on_epoch(epoch: int, loss: float) -> None:
        progress(Event("pretrain_epoch", epoch=epoch + 1, epochs=epochs, loss=loss))

    try:
        _, meta = pretrain(args.model, data, out, epochs=epochs, seed=args.seed, device=device,
                           on_epoch=on_epoch)
    finally:
        progress.close()
    acc = meta["accuracy"]
    print(f"{args.model} on {args.dataset}: test accuracy {100 * acc['test']:.2f}% "
          f"(val {100 * acc['val']:.2f}%), {epochs} epochs in "
          f"{time.perf_counter() - start:.1f}s on {device}")
    print(f"saved {out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from rlprune.env.layers import describe
    from rlprune.models.data import spec_of
    from rlprune.models.registry import DEFAULT_DATASET, build_model
    from rlprune.service.cli.console import print_json

    dataset = args.dataset or DEFAULT_DATASET.get(args.model, "mnist5k")
    spec = spec_of(dataset)
    model = build_model(args.model, **spec.model_kwargs())
    if args.granularity == "channel":
        return _inspect_groups(args, dataset, spec, model)
    net = describe(model, spec.input_shape, args.fc_rule)
    rows: list[dict[str, Any]]
    rows = [{"name": layer.name, "kind": layer.kind, "shape": list(layer.shape),
             "params": layer.params, "flops": layer.flops, "owner": layer.owner}
            for layer in net.layers]
    totals: dict[str, Any]
    totals = {"prunable_weights": net.prunable, "params": net.params_total,
              "flops": net.flops_total,
              "by_owner": {owner: sum(r["params"] for r in rows if r["owner"] == owner)
                           for owner in ("agent", "fc-rule", "none")}}
    if args.json:
        print_json({"model": args.model, "dataset": dataset, "layers": rows, "totals": totals})
        return 0
    shape = "x".join(map(str, spec.input_shape))
    print(f"{args.model} on {dataset}-shaped input ({shape}, {spec.num_classes} classes)")
    print(f"{'layer':<28}{'kind':<6}{'shape':<20}{'params':>12}{'FLOPs':>15}  owner")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:<28}{r['kind']:<6}{shape:<20}{r['params']:>12,}{r['flops']:>15,}"
              f"  {r['owner']}")
    prunable = max(1, net.prunable)
    share = {k: f"{v:,} ({100 * v / prunable:.1f}%)" for k, v in totals["by_owner"].items()}
    print(f"prunable weights {net.prunable:,}: agent {share['agent']}, "
          f"fc-rule {share['fc-rule']}, dense {share['none']}")
    print(f"all parameters {net.params_total:,}; FLOPs {net.flops_total:,} (fvcore, 1 MAC = 1)")
    return 0


def _inspect_groups(args: argparse.Namespace, dataset: str, spec, model) -> int:
    """`inspect --granularity channel`: the channel groups and what each costs."""
    from rlprune.env.channels import ChannelGraph
    from rlprune.service.cli.console import print_json

    graph = ChannelGraph(model, spec.input_shape)
    rows: list[dict[str, Any]]
    rows = [{"name": g.name, "kind": g.kind, "channels": g.channels, "layers": g.layers,
             "flops": graph.group_cost(i, "flops"), "params": graph.group_cost(i, "params")}
            for i, g in enumerate(graph.groups)]
    if args.json:
        print_json({"model": args.model, "dataset": dataset, "groups": rows,
                    "output_layer": graph.output_layer, "totals": graph.total})
        return 0
    print(f"{args.model}: {len(rows)} channel groups (the output layer {graph.output_layer} "
          "keeps its outputs); cost = what removing the whole group alone would save")
    print(f"{'group':<24}{'kind':<6}{'channels':>9}{'layers':>8}{'FLOPs':>14}{'params':>11}")
    for r in rows:
        print(f"{r['name']:<24}{r['kind']:<6}{r['channels']:>9}{len(r['layers']):>8}"
              f"{int(r['flops']):>14,}{int(r['params']):>11,}")
    print(f"all parameters {int(graph.total['params']):,}; FLOPs "
          f"{int(graph.total['flops']):,} (fvcore, 1 MAC = 1)")
    return 0


# -- jobs ------------------------------------------------------------------------------
def _require_run_folder(run_dir: str | None) -> None:
    """--run-dir must be a new or empty folder; without it, runs/ must take a new one."""
    if run_dir is None:
        require_writable_folder(RUNS_ROOT, "runs/")
    else:
        require_empty_folder(run_dir, "run_dir")


def _validate_names(model: str, dataset: str) -> None:
    from rlprune.models.data import spec_of
    from rlprune.models.registry import build_model

    build_model(model, **spec_of(dataset).model_kwargs())


def _dense(config, quiet: bool = False):
    """The job's dense model: names checked first, then loaded (or pre-trained once, its
    progress shown unless `quiet`)."""
    from rlprune.service.cli.console import Progress
    from rlprune.service.jobs.dense_loader import load_dense

    config.validate()  # before any pre-training
    progress = Progress(quiet=quiet)
    try:
        return load_dense(config, on_pretrain=progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted while loading or pre-training the dense model "
                                "(nothing was kept); run the same command again") from None
    finally:
        progress.close()


def _finish(start, progress, stopper) -> int:
    """Run a job (`start(on_start)`: `run_job` or `resume_job`) with the console's bars and
    signal handling; 130 if it was interrupted (with the command that continues it)."""
    from rlprune.service.cli.console import print_result, say_how_to_resume

    opened = []

    def on_start(job) -> None:
        opened.append(job)
        stopper.runner = job.runner

    try:
        with stopper:
            result = start(on_start)
    except KeyboardInterrupt:
        progress.close()
        if not opened:
            raise
        say_how_to_resume(opened[0].job)
        return 130
    finally:
        progress.close()
    job = opened[0].job
    if result.state == "interrupted":
        if result.reason:
            print(f"rlprune: {result.reason}", file=sys.stderr)
        say_how_to_resume(job)
        return 130
    print_result(result.policy, job.path, opened[0].runner.method)
    return 0


def _console(quiet: bool):
    """The progress (bars or lines) and the signal handling of one job."""
    from rlprune.service.cli.console import Progress, say_stopping
    from rlprune.service.jobs.stop import SignalStop

    return Progress(quiet=quiet), SignalStop(notify=say_stopping)


def _say_what_runs(opened) -> None:
    """The line a search starts with: its run folder and the problem it prunes."""
    runner, job = opened.runner, opened.job
    from rlprune.env.granularity import granularity_named

    config, env, dense = runner.config, runner.env, runner.dense
    what = granularity_named(config.granularity).summary(config, env)
    print(f"run {job.path}: {config.model} on {config.dataset}, {what}, reward "
          f"{config.reward_kind}, dense test accuracy {100 * dense.test_accuracy:.2f}%",
          file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    from rlprune.service.jobs.lifecycle import run_job

    config = config_from(args, SEARCH_SETTINGS)
    _require_run_folder(args.run_dir)
    dense = _dense(config, args.quiet)
    progress, stopper = _console(args.quiet)

    def start(on_start):
        def announce(opened) -> None:
            on_start(opened)
            _say_what_runs(opened)

        return run_job(config, dense, run_dir=args.run_dir, callback=progress,
                       on_start=announce)

    return _finish(start, progress, stopper)


def cmd_baseline(args: argparse.Namespace) -> int:
    from rlprune.service.jobs.lifecycle import run_job, settled

    config = config_from(args, BASELINE_SETTINGS, warmup=args.episodes)  # random: no learning
    settled(config, args.method)  # the method, before any folder or pre-training
    _require_run_folder(args.run_dir)
    dense = _dense(config, args.quiet)
    progress, stopper = _console(args.quiet)
    return _finish(lambda on_start: run_job(config, dense, args.method, run_dir=args.run_dir,
                                            callback=progress, on_start=on_start),
                   progress, stopper)


def cmd_resume(args: argparse.Namespace) -> int:
    from rlprune.service.jobs.dense_loader import load_dense
    from rlprune.service.jobs.resume import resume_job

    progress, stopper = _console(args.quiet)

    def start(on_start):
        def announce(opened) -> None:
            on_start(opened)
            job, method = opened.job, opened.runner.method
            for skipped in opened.skipped:
                print(f"checkpoint {skipped} does not load; skipped (kept)", file=sys.stderr)
            if method != "ddpg":
                print(f"running baseline {method} in {job.path} again", file=sys.stderr)
            elif opened.checkpoint is not None:
                print(f"resuming {job.path} from {opened.checkpoint.name}", file=sys.stderr)
            else:
                print(f"no checkpoint in {job.path}; starting its search over",
                      file=sys.stderr)

        return resume_job(args.run, load_dense, episodes=args.episodes, callback=progress,
                          on_start=announce)

    return _finish(start, progress, stopper)


def cmd_bench(args: argparse.Namespace) -> int:
    from rlprune.service.bench.report import merge_files
    from rlprune.service.bench.runner import run_bench
    from rlprune.service.cli.console import Progress, say_stopping
    from rlprune.service.jobs.stop import SignalStop

    bench = settings_from(args, BenchConfig)
    bench.check_out()
    out = Path(bench.out)
    if bench.merge:
        merge_files(list(bench.merge), out)
        return _print_bench(out)
    base = config_from(args, BENCH_SETTINGS, checkpoint_every=args.episodes)
    bench.validate(base)  # every target and method, before any work
    _validate_names(base.model, base.dataset)
    dense = _dense(base, args.quiet)
    with SignalStop(notify=say_stopping) as stopper:
        report = run_bench(dense, base, targets=list(bench.targets),
                           methods=bench.methods_for(base.granularity), seeds=bench.seeds,
                           first_seed=bench.first_seed, out=out,
                           progress=lambda label: Progress(label, quiet=args.quiet),
                           log=lambda line: print(line, file=sys.stderr),
                           on_runner=lambda runner: setattr(stopper, "runner", runner),
                           resume=bench.resume)
    _print_bench(out)
    return 0 if report["results"] else 1


def _print_bench(out: Path) -> int:
    print((out / "bench.md").read_text(), end="")
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0


HANDLERS = {"pretrain": cmd_pretrain, "inspect": cmd_inspect, "search": cmd_search,
            "baseline": cmd_baseline, "resume": cmd_resume, "bench": cmd_bench,
            **run_commands.HANDLERS, **service_commands.HANDLERS}
