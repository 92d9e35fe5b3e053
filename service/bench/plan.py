"""A bench's own settings (`BenchConfig`): what it runs beyond a job's settings (targets,
methods, seeds) and where it writes. Declared with `setting()` like `SearchConfig`, so the
command line's flags are made from them and their limits are checked in one place, whoever
asks (the command line, the HTTP service's check and worker, `run_bench`)."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from pathlib import Path

from rlprune.agent.config import MAX_SEED, SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.models.errors import SettingError
from rlprune.models.settings import check, setting

MAX_BENCH_SEEDS = 1000


def bench_methods(granularity: str) -> tuple[str, ...]:
    """What a bench of `granularity` may run: every job method and the searches' variants."""
    from rlprune.service.jobs.lifecycle import job_methods  # the searches register there

    return job_methods(granularity, variants=True)


def default_methods(granularity: str) -> tuple[str, ...]:
    """What a bench of `granularity` runs when no methods are named."""
    return tuple(m for m in bench_methods(granularity)
                 if granularity in METHODS[m].in_default_bench)


def parse_methods(text: str) -> tuple[str, ...]:
    """`ddpg,uniform` (for --methods; an empty list is refused with the known methods)."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


@dataclass
class BenchConfig:
    """`rlprune bench`: every method at every target and seed, or a merge of benches."""

    targets: tuple[float, ...] = setting((0.8, 0.9, 0.95), "The targets, each a job's target.",
                                         metavar="T", section="bench")
    methods: tuple[str, ...] | None = setting(
        None, "Comma-separated methods (default: the granularity's, listed in decisions.md: "
        "Settings).", parse=parse_methods, metavar="M,M", section="bench")
    seeds: int = setting(3, "Seeds per method and target.", min=1, max=MAX_BENCH_SEEDS,
                         metavar="N", section="bench")
    first_seed: int = setting(0, "Seeds run from here (extend an earlier bench).", min=0,
                              max=MAX_SEED, metavar="SEED", section="bench")
    out: str | None = setting(None, "The output folder (must not exist or be empty).",
                              required=True, metavar="DIR", section="bench")
    resume: bool = setting(
        False, "Continue the interrupted bench in the output folder (same settings).",
        section="bench")
    merge: tuple[str, ...] | None = setting(
        None, "Instead of running: join these bench.json files into the output folder.",
        metavar="BENCH_JSON", section="bench")

    def validate(self, base: SearchConfig) -> None:
        """Refuse a plan out of its limits, or a target or method `base` cannot run."""
        check(self)
        if not self.targets or not all(isinstance(t, Real) and not isinstance(t, bool)
                                       for t in self.targets):
            raise SettingError("targets", f"must be a non-empty list of numbers, got "
                               f"{list(self.targets)!r}")
        for target in self.targets:  # every target, before any work
            SearchConfig.with_settings(**{**base.to_json(), "target": target}).validate()
        if self.first_seed + self.seeds - 1 > MAX_SEED:
            raise SettingError("first_seed", f"plus the seeds must stay at most {MAX_SEED}")
        known = bench_methods(base.granularity)
        unknown = [m for m in self.methods or () if m not in known]
        if self.methods is not None and (not self.methods or unknown):
            raise SettingError("methods", f"has unknown method {', '.join(unknown) or '(none)'}"
                               f" for granularity {base.granularity}; choose from "
                               f"{', '.join(known)}")

    def methods_for(self, granularity: str) -> list[str]:
        """The methods to run: as given, or the granularity's default ones."""
        return list(self.methods or default_methods(granularity))

    def check_out(self) -> None:
        """Refuse, before any work, an output that cannot be written or resumed, or a resume
        of a merge."""
        from rlprune.service.jobs.files import require_empty_folder

        if self.out is None:
            raise SettingError("out", "is needed: the folder the bench writes")
        if self.resume and self.merge:
            raise SettingError("resume", "continues a bench; it does not go with `merge`",
                               others=("merge",))
        if not self.resume:
            require_empty_folder(self.out, "out")
        elif not (Path(self.out) / "runs").is_dir():
            raise SettingError("resume", f"`resume`: {self.out} holds no bench's runs to "
                               "continue", lead=False)
