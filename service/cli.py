"""The `rlprune` command line: parses arguments, turns bad input into one line and exit 2.

Heavy imports happen inside each command so `rlprune --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rlprune.models.errors import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"rlprune: error: {message} (see {self.prog} --help)\n")


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"target must be a number in (0, 1), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"target must be in (0, 1), got {text}")
    return value


def _fc_k(text: str) -> float | str:
    from rlprune.env.fc_rule import parse_k

    try:
        return parse_k(text)
    except ValueError:
        msg = f"--fc-k must be a positive number or auto, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _policies(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in ("uniform", "global", "lamp", "erk")]
    if unknown:
        msg = f"unknown seed policy {', '.join(unknown)}; choose from uniform,global,lamp,erk"
        raise argparse.ArgumentTypeError(msg)
    return names


def _add_agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-policies", type=_policies, default=("uniform", "global", "lamp", "erk"),
                   help="baselines played as the first warm-up episodes, comma-separated "
                        "(uniform,global,lamp,erk) or none (default: all four)")
    p.add_argument("--action-mapping", default="auto", choices=("auto", "absolute", "feasible"),
                   help="absolute: an action spans [s_min, s_max], then is clamped, as AMC; "
                        "feasible: it spans what the budget leaves the layer; auto: feasible "
                        "when a layer other than the last holds most of the agent's weights, "
                        "else absolute (default: auto)")


def _add_reward_arg(p: argparse.ArgumentParser) -> None:
    # Spelled out, as env.pruning_env.REWARDS, so that `--help` does not import torch.
    p.add_argument("--reward", default="loss",
                   choices=("loss", "acc", "-err*log(flops)", "-err*log(params)"),
                   help="the search's reward on the val split: minus the cross-entropy, the "
                        "accuracy (AMC), or AMC's error times log cost (default: loss)")


def _add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = "mnist5k") -> None:
    p.add_argument("--dataset", default=dataset_default,
                   help="mnist5k (embedded), digits (embedded), cifar10, cifar100, "
                        "imagefolder:PATH (default: %(default)s)")
    p.add_argument("--data-dir", default="data", help="where cifar10/100 live (default: data)")
    p.add_argument("--download", action="store_true",
                   help="allow cifar10/100 to be downloaded into --data-dir")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu (default: auto)")


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    """What to prune and how: shared by search and baseline so they compare like with like."""
    p.add_argument("--model", default="vgg-mini", help="registry name or package.module:factory")
    _add_data_args(p)
    p.add_argument("--checkpoint", default=None,
                   help="trained dense weights (default: cached pre-trained model, "
                        "trained on first use)")
    p.add_argument("--target", type=_target, default=0.9, help="global sparsity in (0, 1)")
    p.add_argument("--scope", default="total", choices=("total", "agent"))
    p.add_argument("--fc-rule", default="3sigma", choices=("3sigma", "agent", "none"))
    p.add_argument("--fc-k", type=_fc_k, default="auto",
                   help="k of the k-sigma FC rule, or auto (default: auto)")
    p.add_argument("--fc-after-search", action="store_true",
                   help="apply the FC masks only after the search (default: during it)")
    _add_reward_arg(p)
    p.add_argument("--bn-recalibration", type=int, default=1, metavar="BATCHES",
                   help="re-estimate BatchNorm statistics on this many train batches before "
                        "scoring (default: 1; 0: off)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    _add_device_arg(p)
    p.add_argument("--run-dir", default=None, help="default: runs/<job-id>")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlprune", description="RL-driven weight pruning of PyTorch CNNs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("pretrain", help="train a dense model and save a checkpoint")
    p.add_argument("--model", default="vgg-mini", help="registry name or package.module:factory")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=None, help="default: per model (measured)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: runs/pretrained/MODEL-DATASET-seedS.pt")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    _add_device_arg(p)

    p = sub.add_parser("inspect", help="list the prunable layers, params and FLOPs")
    p.add_argument("--model", default="vgg-mini", help="registry name or package.module:factory")
    p.add_argument("--dataset", default=None, help="input shape and classes (default: per model)")
    p.add_argument("--fc-rule", default="3sigma", choices=("3sigma", "agent", "none"))
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("search", help="DDPG search for per-layer sparsities, then fine-tune "
                                      "(no arguments: vgg-mini on mnist5k at 0.9)")
    _add_problem_args(p)
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100,
                   help="warm-up episodes: the seed policies, then random actions")
    p.add_argument("--checkpoint-every", type=int, default=25, metavar="EPISODES")
    _add_agent_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("baseline", help="prune with a baseline allocation (same layers, FC "
                                        "rule and fine-tune as search)")
    p.add_argument("--method", required=True, choices=("uniform", "global", "lamp", "erk"))
    _add_problem_args(p)

    p = sub.add_parser("bench", help="compare methods over targets and seeds (bench.json, "
                                     "bench.md, bench.png)")
    p.add_argument("--model", default="vgg-mini", help="registry name or package.module:factory")
    _add_data_args(p)
    p.add_argument("--checkpoint", default=None, help="dense weights (default: cached)")
    p.add_argument("--targets", type=_target, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--methods", default="ddpg,ddpg-only,3sigma-only,uniform,global,lamp,erk",
                   help="comma-separated (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds per method and target")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds run from here (extend an earlier bench; default: 0)")
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100)
    _add_agent_args(p)
    _add_reward_arg(p)
    p.add_argument("--fc-rule", default="3sigma", choices=("3sigma", "agent", "none"),
                   help="for every method but ddpg-only and 3sigma-only (default: 3sigma)")
    p.add_argument("--fc-k", type=_fc_k, default="auto")
    p.add_argument("--finetune-epochs", type=int, default=3)
    _add_device_arg(p)
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (one line per finished run still)")

    p = sub.add_parser("resume", help="continue an interrupted search from its last "
                                      "checkpoint (an interrupted baseline runs again)")
    p.add_argument("run", help="run folder (or its name under runs/)")
    p.add_argument("--episodes", type=int, default=None, help="new total number of episodes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("list", help="the runs under runs/ and their state")
    p = sub.add_parser("status", help="one run's state as JSON")
    p.add_argument("run")

    p = sub.add_parser("export", help="write a run's sparsity policy")
    p.add_argument("run")
    p.add_argument("--out", default=None, help="file to write (default: standard output)")
    p.add_argument("--format", default="json", choices=("json", "yaml"))
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")

    p = sub.add_parser("apply", help="apply a policy to a trained model and save it pruned")
    p.add_argument("policy", help="policy file (json or yaml)")
    p.add_argument("--model", required=True, help="registry name or package.module:factory")
    p.add_argument("--checkpoint", required=True, help="the trained dense weights")
    p.add_argument("--out", required=True, help="where to save the pruned checkpoint")
    p.add_argument("--dataset", default=None, help="default: the policy's dataset")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    return parser


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """`--reward -err*log(flops)` as `--reward=-err*log(flops)`: argparse takes a value that
    starts with '-' for an option and would say the flag has no argument."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--reward" and arg.startswith("-err*"):
            out[-1] = f"--reward={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from rlprune.service import commands

    handler = commands.HANDLERS[args.command]
    try:
        return handler(args) or 0
    except UserError as exc:
        print(f"rlprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlprune: interrupted", file=sys.stderr)
        return 130


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    sys.exit(main())
