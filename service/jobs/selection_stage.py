"""A search's selection stage (`select_top_k` > 0): its top allocations by reward and the seed
policies' compete by recovered val accuracy (`rlprune.env.selection`); the one left is the
job's policy.

In a run folder every score is written to `selection.json` as it is known, so a job killed
during selection and resumed scores only what is left (each score is a function of the
allocation and the seed, so the pick is the same either way).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.env.finalize import pruned_copy
from rlprune.env.selection import (
    Candidate,
    halving_scorings,
    short_finetune,
    successive_halving,
)
from rlprune.models.dense import Dense
from rlprune.service.jobs.files import read_json, write_json
from rlprune.service.jobs.job_policy import job_policy

SELECTION_FILE = "selection.json"


def candidates(config: SearchConfig, env, top: list[dict]) -> list[Candidate]:
    """The top `select_top_k` distinct allocations of the search, then each seed policy's
    allocation not among them (one that is gets its name added)."""
    out = [Candidate(f"episode {e['episode']}", e["sparsities"], e["reward"], e["episode"])
           for e in top[:config.select_top_k]]
    for name in config.seed_policies_for():
        allocate = METHODS[name].allocate
        assert allocate is not None  # a seed policy is a rule (SearchConfig checks the names)
        sparsities = env.sparsities(allocate(env))
        same = next((c for c in out if _same(c.sparsities, sparsities)), None)
        if same is None:
            out.append(Candidate(f"seed {name}", sparsities))
        else:
            same.name += f" (seed {name})"
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], abs_tol=1e-9) for k in a)


def select(config: SearchConfig, dense: Dense, env, method: str, top: list[dict],
           folder: Path | None = None, *,
           progress: Callable[[int, int], None] | None = None
           ) -> tuple[Candidate, list[Candidate]]:
    """The selected candidate and every candidate with its scores; `progress(done, total)`
    hears of the scorings (first with done 0; a resumed selection counts the saved ones)."""
    pool = candidates(config, env, top)
    path = None if folder is None else Path(folder) / SELECTION_FILE
    if path is not None and path.is_file():
        _restore(pool, read_json(path))
    total = halving_scorings(len(pool), config.select_rungs)
    done = [min(total, sum(len(c.scores) for c in pool))]
    if progress is not None:
        progress(done[0], total)
    data = dense.data

    def score(candidate: Candidate, steps: int) -> tuple[float, float]:
        policy = job_policy(method, config, dense, env, None, chosen=_entry(candidate))
        model, masks = pruned_copy(dense.model, policy, config.device, data.input_shape)
        return short_finetune(model, masks, data.train, data.val, steps=steps,
                              lr=config.finetune_lr, seed=config.seed,
                              bn_batches=config.bn_recalibration_batches,
                              bn_batch_size=config.bn_batch_size)

    def save(_: Candidate) -> None:
        if path is not None:
            write_json(path, {"candidates": [{**c.to_json(), "sparsities": c.sparsities}
                                             for c in pool]})
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    chosen = successive_halving(pool, score, config.select_steps, rungs=config.select_rungs,
                                on_scored=save)
    return chosen, pool


def _restore(pool: list[Candidate], saved: dict) -> None:
    """The scores a stopped selection had, for the candidates that are the same."""
    by_name = {c.get("name"): c for c in saved.get("candidates", []) if isinstance(c, dict)}
    for candidate in pool:
        old = by_name.get(candidate.name)
        if old and isinstance(old.get("sparsities"), dict) and _same(
                old["sparsities"], candidate.sparsities):
            candidate.scores = list(old.get("scores") or [])


def _entry(candidate: Candidate) -> dict:
    """A candidate in the shape of a search's best episode (for `job_policy`)."""
    return {"sparsities": candidate.sparsities, "reward": candidate.reward,
            "episode": candidate.episode, "proxy_accuracy": None}
