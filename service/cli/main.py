"""The `rlprune` command line: parses arguments, turns bad input into one line and exit 2.

The flags of the jobs and of pretrain, bench, serve and export-model are made from the
settings' declarations (`flags`), so a setting is declared once. Heavy imports happen inside
each command, so `rlprune --help` is instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from rlprune.models.errors import SettingError, UserError
from rlprune.service.cli.flags import (
    BASELINE_SETTINGS,
    SEARCH_SETTINGS,
    Console,
    add_declared,
    add_settings,
    error_text,
    section,
    tidy_help,
)

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"rlprune: error: {message} (see {self.prog} --help)\n")


DESCRIPTION = ("RL-driven pruning of PyTorch CNNs: per-layer weight sparsity (masks) or whole "
               "channels removed, under a budget, then a masked fine-tune.")
WHY = "Why each default is what it is: docs/decisions.md, section Settings."
RUN_OR_JOB = "A run folder (or its name under runs/); with --server, a job's id."


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlprune", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_job_commands(sub)
    _add_run_commands(sub)
    _add_service_commands(sub)
    _add_model_commands(sub)
    for command in sub.choices.values():
        tidy_help(command)
    return parser


def _add_job_commands(sub) -> None:
    """pretrain, inspect, search, baseline, bench, resume."""
    p = sub.add_parser("pretrain", help="train a dense model and save its weights")
    add_declared(p, "pretrain")

    p = sub.add_parser("inspect", help="list the prunable layers, params and FLOPs")
    add_settings(p, ["model", "dataset", "fc_rule", "granularity"], dataset=None)
    p.add_argument("--json", action="store_true", help="Machine-readable output (JSON).")

    p = _job_parser(sub, "search", "search per-layer sparsities (weights or channels) with RL, "
                                   "then fine-tune (no arguments: vgg-mini on mnist5k at 0.9)")
    add_settings(p, SEARCH_SETTINGS)
    _add_job_folder(p)

    p = _job_parser(sub, "baseline", "prune with a baseline allocation (same layers, FC rule "
                                     "and fine-tune as search)")
    p.add_argument("--method", required=True,
                   help="A registered method but ddpg: weight uniform, global, lamp, erk, "
                        "3sigma-only; channel uniform, global-l1, global-taylor; random, tpe")
    add_settings(p, BASELINE_SETTINGS)
    _add_job_folder(p)

    p = _job_parser(sub, "bench", "compare methods over targets and seeds (bench.json, bench.md, "
                                  "bench.png), or merge benches (--merge)")
    add_declared(p, "bench")

    p = sub.add_parser("resume", help="continue an interrupted search from its last "
                                      "checkpoint (an interrupted baseline runs again)")
    p.add_argument("run", help="The run folder (or its name under runs/).")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="A new total number of episodes.")
    add_settings(p, None, Console)


def _job_parser(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A command that runs jobs: its one-line help also heads its `--help`, which ends by
    pointing at the measurements behind the defaults."""
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                          epilog=WHY)


def _add_job_folder(p: argparse.ArgumentParser) -> None:
    section(p, "run").add_argument("--run-dir", default=None, metavar="DIR",
                                   help="The run folder (default: runs/<job-id>).")
    add_settings(p, None, Console)


def _add_run_commands(sub) -> None:
    """list, status, export: finished and running runs (here or on a service)."""
    p = sub.add_parser("list", help="the runs under runs/ and their state (or a service's jobs)")
    _add_server(p)
    p = sub.add_parser("status", help="one run's state as JSON (or a service job's)")
    p.add_argument("run", help=RUN_OR_JOB)
    _add_server(p)

    p = sub.add_parser("export", help="write a run's sparsity policy")
    p.add_argument("run", help=RUN_OR_JOB)
    _add_server(p)
    p.add_argument("--out", default=None, metavar="FILE",
                   help="The file to write (default: standard output).")
    p.add_argument("--format", default="json", choices=("json", "yaml"),
                   help="The file's format (default: json).")
    p.add_argument("--force", action="store_true", help="Overwrite an existing --out.")


def _add_service_commands(sub) -> None:
    """serve, submit."""
    p = sub.add_parser("serve", help="run the HTTP service: a job queue, a SQLite registry "
                                     "and a web page")
    add_declared(p, "serve")

    p = _job_parser(sub, "submit", "submit a job to a running service (the search's options; "
                                   "--kind baseline --method M for a baseline)")
    add_settings(p, SEARCH_SETTINGS)
    p.add_argument("--kind", default="search", choices=("search", "baseline"),
                   help="What the job is (default: search).")
    p.add_argument("--method", default=None, help="A baseline's method (with --kind baseline).")
    p.add_argument("--idempotency-key", default=None, metavar="KEY",
                   help="A retried submission with the same key makes one job.")
    _add_server(p, required=True)


def _add_model_commands(sub) -> None:
    """export-model, apply: a pruned model as a file."""
    p = sub.add_parser("export-model", help="write a finished run's pruned model as a small "
                                            "file (sparse, int8, ONNX) and measure it")
    p.add_argument("run", help="run folder (or its name under runs/)")
    add_declared(p, "export-model")

    p = sub.add_parser("apply", help="apply a policy to a trained model and save it pruned")
    p.add_argument("policy", help="The policy file (JSON or YAML).")
    add_settings(p, ["model", "weights", "dataset", "data_dir", "download", "finetune_epochs",
                     "seed"], dataset=None, finetune_epochs=0)
    p.add_argument("--out", required=True, metavar="FILE",
                   help="The pruned model; its suffix says the format (.rlprune, .pt2, .onnx, "
                        "or .pt for a weight policy's state_dict).")
    p.add_argument("--force", action="store_true", help="Overwrite an existing --out.")


def _add_server(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--server", default=None, required=required, metavar="URL",
                   help="The service's URL (e.g. http://127.0.0.1:8080).")
    p.add_argument("--token-file", default=None, metavar="PATH",
                   help="The service's token (default: the RLPRUNE_TOKEN variable).")


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


REDELIVER_S = 0.5  # how often a ^C noted during set-up is delivered again


def main(argv: Sequence[str] | None = None) -> int:
    seen: list[int] = []
    previous = _note_interrupts(seen)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # ^C at any moment, imports and set-up included
        _stop_redelivery()
        print(f"rlprune: {exc.args[0] if exc.args else 'interrupted'}", file=sys.stderr)
        return 130
    except Exception:
        # ^C inside a C extension's import can be swallowed there and leave a half-made
        # module whose next use fails otherwise (numpy: no `_multiarray_umath`)
        if not seen:
            raise
        print("rlprune: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            _stop_redelivery()
            signal.signal(signal.SIGINT, previous)


def _note_interrupts(seen: list[int]):
    """While the command sets up, SIGINT is noted in `seen`, then raises KeyboardInterrupt as
    by default (a search installs its own handler later). An import that swallows that
    KeyboardInterrupt (a library's bare `except`) would let the command run on as if no ^C
    came, so a noted ^C is delivered again every REDELIVER_S until a handler acts on it: this
    one (raising again) or, once the search's own is in place, that one, once. The handler it
    replaced, or None where none can be set (not the main thread, or SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return None  # ignored (a background job) or already someone else's

    def note(signum, frame):
        seen.append(signum)
        signal.signal(signal.SIGALRM, redeliver)
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S, REDELIVER_S)
        raise KeyboardInterrupt

    def redeliver(signum, frame):
        if signal.getsignal(signal.SIGINT) is not note:  # the search's handler: once
            signal.setitimer(signal.ITIMER_REAL, 0)
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, note)
    return previous


def _stop_redelivery() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        from rlprune.service.cli import commands

        return commands.HANDLERS[args.command](args) or 0
    except SettingError as exc:  # named by the flag the user typed
        print(f"rlprune: error: {error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as exc:
        print(f"rlprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `rlprune list | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
