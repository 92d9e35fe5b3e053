"""What each `rlprune` sub-command does, given parsed arguments."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from models.errors import UserError


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    return name


def cmd_pretrain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.data import load_dataset, spec_of
    from models.pretrain import DEFAULT_EPOCHS, FALLBACK_EPOCHS, default_checkpoint_path, pretrain
    from models.registry import build_model

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    spec = spec_of(args.dataset)
    build_model(args.model, spec.num_classes, spec.in_channels, spec.image_size)  # fail early
    out = Path(args.out) if args.out else default_checkpoint_path(args.model, args.dataset,
                                                                  args.seed)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it or --out elsewhere")
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir, args.download)
    epochs = args.epochs or DEFAULT_EPOCHS.get(args.model, FALLBACK_EPOCHS)
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
    from agent.cli import print_json
    from env.layers import describe
    from models.data import spec_of
    from models.registry import DEFAULT_DATASET, build_model

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
