"""What a bench runs beyond a job's settings (`BenchPlan`): its targets, methods and seeds,
declared with `setting()` like `SearchConfig` and checked in one place (CLI, API, worker)."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from rlprune.agent.config import MAX_SEED, SearchConfig
from rlprune.models.errors import SettingError
from rlprune.models.settings import check, setting

MAX_BENCH_SEEDS = 1000


@dataclass
class BenchPlan:
    """What a bench runs beyond a job's settings: its targets, methods and seeds."""

    targets: tuple[float, ...] = setting((0.8, 0.9, 0.95), "The targets, each a job's target.")
    methods: tuple[str, ...] | None = setting(None, "The methods (default: per granularity).")
    seeds: int = setting(3, "Seeds per method and target.", min=1, max=MAX_BENCH_SEEDS)
    first_seed: int = setting(0, "Seeds run from here (extend an earlier bench).", min=0,
                              max=MAX_SEED)

    def validate(self, base: SearchConfig) -> None:
        """Refuse a plan out of its limits, or a target or method `base` cannot run."""
        from rlprune.service.bench.runner import bench_methods

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
