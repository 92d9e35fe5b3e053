"""What each `rlprune` sub-command does, given parsed arguments."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rlprune.models.errors import UserError


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    return name


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rlprune.models.data import load_dataset
    from rlprune.models.pretrain import default_checkpoint_path, default_epochs, pretrain
    from tqdm import tqdm

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    _validate_names(args.model, args.dataset)
    out = Path(args.out) if args.out else default_checkpoint_path(args.model, args.dataset,
                                                                  args.seed)
    _refuse_existing(out, args.force)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir, args.download)
    epochs = args.epochs or default_epochs(args.model)
    start = time.perf_counter()
    with tqdm(total=epochs, desc=f"pretrain {args.model}", unit="epoch", file=sys.stderr) as bar:
        def on_epoch(epoch: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update()

        _, meta = pretrain(args.model, data, out, epochs=epochs, seed=args.seed, device=device,
                           on_epoch=on_epoch)
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
    from rlprune.service.cli import print_json

    dataset = args.dataset or DEFAULT_DATASET.get(args.model, "mnist5k")
    spec = spec_of(dataset)
    model = build_model(args.model, spec.num_classes, spec.in_channels, spec.image_size)
    net = describe(model, (spec.in_channels, spec.image_size, spec.image_size), args.fc_rule)
    rows = [{"name": layer.name, "kind": layer.kind, "shape": list(layer.shape),
             "params": layer.params, "flops": layer.flops, "owner": layer.owner}
            for layer in net.layers]
    totals = {"prunable_weights": net.prunable, "params": net.params_total,
              "flops": net.flops_total,
              "by_owner": {owner: sum(r["params"] for r in rows if r["owner"] == owner)
                           for owner in ("agent", "fc-rule", "none")}}
    if args.json:
        print_json({"model": args.model, "dataset": dataset, "layers": rows, "totals": totals})
        return 0
    print(f"{args.model} on {dataset}-shaped input "
          f"({spec.in_channels}x{spec.image_size}x{spec.image_size}, {spec.num_classes} classes)")
    print(f"{'layer':<28}{'kind':<6}{'shape':<20}{'params':>12}{'FLOPs':>15}  owner")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:<28}{r['kind']:<6}{shape:<20}{r['params']:>12,}{r['flops']:>15,}"
              f"  {r['owner']}")
    share = {k: f"{v:,} ({100 * v / net.prunable:.1f}%)" for k, v in totals["by_owner"].items()}
    print(f"prunable weights {net.prunable:,}: agent {share['agent']}, "
          f"fc-rule {share['fc-rule']}, dense {share['none']}")
    print(f"all parameters {net.params_total:,}; FLOPs {net.flops_total:,} (fvcore, 1 MAC = 1)")
    return 0


HANDLERS = {"pretrain": cmd_pretrain, "inspect": cmd_inspect}


# -- search jobs -------------------------------------------------------------------------
def _search_config(args: argparse.Namespace):
    from rlprune.agent.config import SearchConfig

    defaults = SearchConfig()
    for flag in ("episodes", "checkpoint_every"):
        if getattr(args, flag, 1) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    if min(getattr(args, "warmup", 0), args.finetune_epochs, args.bn_recalibration) < 0:
        raise UserError("--warmup, --finetune-epochs and --bn-recalibration must be >= 0")
    return SearchConfig(
        model=args.model, dataset=args.dataset, checkpoint=args.checkpoint,
        data_dir=args.data_dir, download=args.download, target=args.target, scope=args.scope,
        fc_rule=args.fc_rule, fc_k=args.fc_k, fc_during_search=not args.fc_after_search,
        reward=args.reward, bn_recalibration_batches=args.bn_recalibration,
        episodes=getattr(args, "episodes", defaults.episodes),
        warmup=getattr(args, "warmup", defaults.warmup),
        checkpoint_every=getattr(args, "checkpoint_every", defaults.checkpoint_every),
        seed_policies=getattr(args, "seed_policies", defaults.seed_policies),
        action_mapping=getattr(args, "action_mapping", defaults.action_mapping),
        finetune_epochs=args.finetune_epochs, seed=args.seed,
        device=resolve_device(args.device))


def _require_empty_folder(path: str | Path | None, flag: str) -> None:
    """Refuse an output folder that holds anything (or is a file): nothing gets overwritten."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"{flag} {path} is not empty; choose another (or `rlprune resume` a run)")


def _validate_names(model: str, dataset: str) -> None:
    from rlprune.models.data import spec_of
    from rlprune.models.registry import build_model

    spec = spec_of(dataset)
    build_model(model, spec.num_classes, spec.in_channels, spec.image_size)


def _epoch_bar(desc: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False,
               disable=total == 0)  # no empty bar for --finetune-epochs 0

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update()

    return bar, on_epoch


def _pretrain_progress(config):
    """An epoch callback that opens a progress bar the first time pre-training reports."""
    bar = None

    def on_epoch(epoch: int, loss: float) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            print(f"no cached dense {config.model} for {config.dataset}: pre-training it once",
                  file=sys.stderr)
            from rlprune.models.pretrain import default_epochs

            bar = tqdm(desc="pretrain", unit="epoch", total=default_epochs(config.model),
                       file=sys.stderr, leave=False)
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update()

    return on_epoch


def _run_search(search, job, config, resume_from=None) -> int:
    """Search, then finish (policy, fine-tune, report); the run's lock is released however
    this ends, and its status says how."""
    try:
        return _search_then_finish(search, job, config, resume_from)
    except KeyboardInterrupt:
        # ^C before the first episode or during the fine-tune lands here, not in the search's
        # own signal handler: the run is interrupted (resumable), not failed.
        search.write_status("interrupted")
        _say_how_to_resume(search, job)
        return 130
    except BaseException:
        search.write_status("interrupted" if search.stop_requested else "failed")
        raise
    finally:
        job.release()


def _say_how_to_resume(search, job) -> None:
    done, saved = search.state.episode, search.saved_at
    if saved == done:
        where = ""
    elif saved is None:
        where = " (no checkpoint yet: resuming starts it over)"
    else:
        where = f" (the last checkpoint is episode {saved})"
    print(f"interrupted after episode {done}{where}; continue with: rlprune resume {job.path}",
          file=sys.stderr)


def _search_then_finish(search, job, config, resume_from) -> int:
    from rlprune.service.report import result_rows, write_report

    timings = {}
    start = time.perf_counter()
    search.run(job, resume_from)
    timings["search"] = time.perf_counter() - start
    if search.stop_requested:
        search.write_status("interrupted")
        _say_how_to_resume(search, job)
        return 130
    start = time.perf_counter()
    bar, on_epoch = _epoch_bar("fine-tune", config.finetune_epochs)
    with bar:
        policy = search.finish(on_finetune_epoch=on_epoch)
    timings["fine-tune"] = time.perf_counter() - start
    episodes_run = search.state.episode - search.episodes_at_start
    if episodes_run:
        timings["one episode (search ÷ episodes, updates included)"] = (
            timings["search"] / episodes_run)
    write_report(job.path, policy, search.state.rewards, config.warmup, timings)
    search.write_status("finished", achieved_sparsity=policy["achieved"]["sparsity"])
    print(f"\nrun {job.path}")
    for key, value in result_rows(policy):
        print(f"  {key:<40}{value}")
    print(f"  policy {job.path / 'policy.json'}, report {job.path / 'report.md'}, "
          f"TensorBoard: tensorboard --logdir {job.path / 'tb'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rlprune.agent.search import Search, load_dense
    from rlprune.service.jobs import Job, new_job_id

    config = _search_config(args)
    _validate_names(config.model, config.dataset)
    _require_empty_folder(args.run_dir, "--run-dir")
    dense = load_dense(config, on_pretrain_epoch=_pretrain_progress(config))
    search = Search(config, dense, progress=not args.quiet)
    job = Job.create(args.run_dir, new_job_id(config.model, config.dataset, config.target))
    job.write_config(config.to_json())
    k = search.env.fc.k
    fc = (f"FC layers by the k-sigma rule (k={k:g})" if k is not None else
          "FC layers by the agent" if config.fc_rule == "agent" else "FC layers dense")
    print(f"run {job.path}: {config.model} on {config.dataset}, target {config.target:g} "
          f"({config.scope}), {len(search.env.agent_layers)} agent layers, {fc}, "
          f"{search.env.action_mapping} actions (layer sparsity up to {search.env.s_max:.4g}), "
          f"reward {config.reward}, dense test accuracy "
          f"{100 * dense.test_accuracy:.2f}%", file=sys.stderr)
    return _run_search(search, job, config)


def cmd_resume(args: argparse.Namespace) -> int:
    from rlprune.agent.config import SearchConfig
    from rlprune.agent.search import Search, load_dense
    from rlprune.service import checkpoints as checkpoint
    from rlprune.service.jobs import Job

    job = Job.open(args.run)
    status = job.status()
    if status["state"] == "finished":
        raise UserError(f"run {job.path} is finished; start a new search instead")
    if job.is_running():
        raise UserError(f"run {job.path} is already running")
    saved = job.config()
    config = SearchConfig.from_json(saved)
    method = saved.get("method")
    if method is not None:  # a baseline job: nothing to continue, so it runs again in place
        if args.episodes is not None:
            raise UserError(f"run {job.path} is a baseline ({method}); it has no episodes")
        dense = load_dense(config)
        job.acquire()
        print(f"running baseline {method} in {job.path} again", file=sys.stderr)
        return _run_baseline_job(job, config, method, dense)
    if args.episodes is not None:
        if args.episodes < 1:
            raise UserError("--episodes must be at least 1")
        config.episodes = args.episodes
    dense = load_dense(config)
    search = Search(config, dense, progress=not args.quiet)
    latest = checkpoint.latest(job.checkpoints)
    if latest is not None:
        search.check_resumable(latest)  # refuse before touching the run
    job.acquire()
    if latest is not None:
        print(f"resuming {job.path} from {latest.name}", file=sys.stderr)
    else:
        print(f"no checkpoint in {job.path}; starting its search over", file=sys.stderr)
    if args.episodes is not None:
        job.write_config(config.to_json())
    return _run_search(search, job, config, latest)


def cmd_baseline(args: argparse.Namespace) -> int:
    from rlprune.agent.search import load_dense
    from rlprune.service.baseline import baseline_env
    from rlprune.service.jobs import Job, new_job_id

    config = _search_config(args)
    _validate_names(config.model, config.dataset)
    _require_empty_folder(args.run_dir, "--run-dir")
    dense = load_dense(config, on_pretrain_epoch=_pretrain_progress(config))
    baseline_env(config, dense)  # refuses an infeasible target before a folder is made
    job = Job.create(args.run_dir, new_job_id(f"{config.model}-{args.method}", config.dataset,
                                              config.target))
    job.write_config({**config.to_json(), "method": args.method})
    return _run_baseline_job(job, config, args.method, dense)


def _run_baseline_job(job, config, method: str, dense) -> int:
    """Prune by `method`, fine-tune, write the run's files; the run's lock is released however
    this ends, and a ^C leaves it interrupted (`rlprune resume` runs it again: it has no
    episodes to keep)."""
    try:
        return _baseline_then_write(job, config, method, dense)
    except KeyboardInterrupt:
        job.write_status("interrupted", method=method)
        print(f"interrupted; run it again with: rlprune resume {job.path}", file=sys.stderr)
        return 130
    except BaseException:
        job.write_status("failed", method=method)
        raise
    finally:
        job.release()


def _baseline_then_write(job, config, method: str, dense) -> int:
    from rlprune.agent.policy import save_policy
    from rlprune.models.train import save_checkpoint
    from rlprune.service.baseline import run_baseline
    from rlprune.service.report import result_rows, write_report

    job.write_status("running", method=method)
    start = time.perf_counter()
    bar, on_epoch = _epoch_bar("fine-tune", config.finetune_epochs)
    with bar:
        policy, model = run_baseline(method, config, dense, on_epoch)
    save_policy(policy, job.path / "policy.json")
    save_checkpoint(job.path / "pruned.pt", model,
                    {"model": config.model, "dataset": config.dataset,
                     "accuracy": {"test": policy["accuracy"]["finetuned"]}})
    write_report(job.path, policy, [], 0, {"prune + fine-tune": time.perf_counter() - start})
    job.write_status("finished", method=method,
                     achieved_sparsity=policy["achieved"]["sparsity"])
    print(f"run {job.path} ({method})")
    for key, value in result_rows(policy):
        print(f"  {key:<40}{value}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rlprune.agent.config import SearchConfig
    from rlprune.agent.search import load_dense
    from rlprune.service.bench import run_bench

    out = Path(args.out)
    _require_empty_folder(out, "--out")
    if (args.seeds < 1 or args.episodes < 1 or args.warmup < 0 or args.finetune_epochs < 0
            or args.first_seed < 0):
        raise UserError("--seeds and --episodes must be >= 1, --warmup, --first-seed and "
                        "--finetune-epochs >= 0")
    _validate_names(args.model, args.dataset)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    base = SearchConfig(model=args.model, dataset=args.dataset, checkpoint=args.checkpoint,
                        data_dir=args.data_dir, download=args.download,
                        fc_rule=args.fc_rule, fc_k=args.fc_k,
                        episodes=args.episodes, warmup=args.warmup,
                        seed_policies=args.seed_policies, action_mapping=args.action_mapping,
                        reward=args.reward, checkpoint_every=args.episodes,
                        finetune_epochs=args.finetune_epochs,
                        device=resolve_device(args.device))
    dense = load_dense(base, on_pretrain_epoch=_pretrain_progress(base))
    report = run_bench(dense, base, targets=args.targets, methods=methods, seeds=args.seeds,
                       first_seed=args.first_seed, out=out, progress=not args.quiet,
                       log=lambda line: print(line, file=sys.stderr))
    print((out / "bench.md").read_text(), end="")
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0 if report["results"] else 1


def cmd_list(args: argparse.Namespace) -> int:
    from rlprune.service.jobs import list_jobs

    jobs = list_jobs()
    if not jobs:
        print("no runs under runs/")
        return 0
    print(f"{'run':<48}{'state':<13}{'episodes':>10}{'best reward':>13}{'sparsity':>10}")
    for job in jobs:
        s = job.status()
        best = s.get("best_reward")
        sparsity = s.get("achieved_sparsity")
        episodes = (f"{s['method']:>10}" if "method" in s else  # a baseline has none
                    f"{s.get('episodes_done', 0)!s:>5}/{s.get('episodes', '?')!s:<4}")
        print(f"{job.path.name:<48}{s['state']:<13}{episodes}"
              f"{'' if best is None else f'{best:.4f}':>13}"
              f"{'' if sparsity is None else f'{sparsity:.4f}':>10}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rlprune.service.cli import print_json
    from rlprune.service.jobs import Job

    job = Job.open(args.run)
    status = job.status()
    status["run"] = str(job.path)
    print_json(status)
    return 0


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from rlprune.agent.policy import load_policy, save_policy
    from rlprune.service.jobs import Job

    job = Job.open(args.run)
    source = job.path / "policy.json"
    if not source.is_file():
        raise UserError(f"run {job.path} has no policy yet (state: {job.status()['state']})")
    policy = load_policy(source)
    if args.out is None:
        if args.format == "json":
            print(json.dumps(policy, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(policy, sort_keys=False), end="")
        return 0
    out = Path(args.out)
    _refuse_existing(out, args.force)
    save_policy(policy, out, args.format)
    print(f"wrote {out}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from rlprune.agent.finalize import prune_and_finetune
    from rlprune.agent.policy import load_policy, policy_masks
    from rlprune.models.data import load_dataset, spec_of
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights, save_checkpoint

    policy = load_policy(args.policy)
    out = Path(args.out)
    _refuse_existing(out, args.force)
    if args.finetune_epochs < 0:
        raise UserError("--finetune-epochs must be >= 0")
    dataset = args.dataset or policy.get("dataset", "mnist5k")
    spec = spec_of(dataset)
    model = build_model(args.model, spec.num_classes, spec.in_channels, spec.image_size)
    load_weights(model, args.checkpoint)
    policy_masks(model, policy)  # refuses a policy that does not fit, before any work
    data = load_dataset(dataset, args.data_dir, args.download)
    bar, on_epoch = _epoch_bar("fine-tune", args.finetune_epochs)
    with bar:
        done = prune_and_finetune(model, policy, data, epochs=args.finetune_epochs,
                                  seed=args.seed, on_epoch=on_epoch)
    weights = {n: m.weight for n, m in done.model.named_modules() if hasattr(m, "weight")}
    applied = {layer["name"]: float((weights[layer["name"]] == 0).sum())
               / weights[layer["name"]].numel() for layer in policy["layers"]}
    save_checkpoint(out, done.model, {"model": args.model, "dataset": dataset,
                                      "accuracy": {"test": done.finetuned_accuracy},
                                      "policy": applied})
    total = sum(applied[la["name"]] * la["params"] for la in policy["layers"])
    prunable = sum(la["params"] for la in policy["layers"])
    print(f"applied {args.policy} ({policy['method']}) to {args.model}: sparsity "
          f"{total / prunable:.4f}; test accuracy pruned {100 * done.pruned_accuracy:.2f}%, "
          f"fine-tuned {100 * done.finetuned_accuracy:.2f}% ({args.finetune_epochs} epochs)")
    print(f"saved {out}")
    return 0


HANDLERS.update(search=cmd_search, baseline=cmd_baseline, bench=cmd_bench, resume=cmd_resume,
                list=cmd_list, status=cmd_status, export=cmd_export, apply=cmd_apply)
