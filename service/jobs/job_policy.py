"""A job's allocation as a policy (the export format): from the search's best episode, a
baseline's rule, or the k-sigma rule on every layer; weight or channel granularity."""

from __future__ import annotations

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.agent.search import Search
from rlprune.agent.tpe import TpeSearch
from rlprune.env.granularity import granularity_named
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint


def job_policy(method: str, config: SearchConfig, dense: Dense, env,
               search: Search | TpeSearch | None, chosen: dict | None = None) -> dict:
    """The policy of `method` on `env`'s problem: the allocation `chosen` (an episode's
    record: sparsities, reward, episode, proxy_accuracy), else the search's best episode when
    `search` is given, else the baseline's rule."""
    c = config
    fingerprint = arch_fingerprint(dense.model)
    accuracy = {"dense": dense.test_accuracy}
    search_info: dict = {"seed": c.seed}
    rule = METHODS[method]
    if rule.policy is not None:  # a rule that makes its whole policy (3sigma-only)
        return rule.policy(c, dense)
    if chosen is None and search is not None:
        chosen = search.best
        if chosen is None:
            raise UserError("the search ran no episode; nothing to export")
    if chosen is not None:
        sparsities = chosen["sparsities"]
        accuracy["proxy"] = chosen["proxy_accuracy"]
        # the search's best by reward, also where the selection stage applied another
        # allocation (named in the policy's `selection`)
        best = search.best if search is not None and search.best is not None else chosen
        search_info = {"episodes": search.state.episode if search else None,
                       "best_episode": best["episode"], "best_reward": best["reward"],
                       "seed": c.seed, "action_mapping": env.action_mapping, "s_max": env.s_max}
    else:
        assert rule.allocate is not None  # a baseline's rule (a search gave `chosen`)
        sparsities = env.sparsities(rule.allocate(env))
    return granularity_named(c.granularity).build_policy(
        env, sparsities, config=c, model=c.model, dataset=c.dataset, fingerprint=fingerprint,
        method=method, accuracy=accuracy, search=search_info)
