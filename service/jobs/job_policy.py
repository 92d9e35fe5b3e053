"""A job's allocation as a policy (the export format): from the search's best episode, a
baseline's rule, or the k-sigma rule on every layer; weight or channel granularity."""

from __future__ import annotations

from rlprune.agent.config import SearchConfig
from rlprune.agent.search import Search
from rlprune.env.layers import describe, nonzero_costs
from rlprune.env.masks import sigma_mask
from rlprune.env.policy import build_channel_policy, build_policy
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint


def job_policy(method: str, config: SearchConfig, dense: Dense, env, search: Search | None,
               chosen: dict | None = None) -> dict:
    """The policy of `method` on `env`'s problem: the allocation `chosen` (an episode's
    record: sparsities, reward, episode, proxy_accuracy), else the search's best episode when
    `search` is given, else the baseline's rule."""
    c = config
    fingerprint = arch_fingerprint(dense.model)
    accuracy = {"dense": dense.test_accuracy}
    search_info: dict = {"seed": c.seed}
    if method == "3sigma-only":
        return _three_sigma_everywhere(c, dense, fingerprint, accuracy)
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
        sparsities = env.sparsities(env.baseline_counts(method))
    if c.granularity == "channel":
        removed = env.removed_channels(sparsities)
        counts = [len(removed[g.name]) for g in env.graph.groups]
        return build_channel_policy(
            model=c.model, dataset=c.dataset, fingerprint=fingerprint, method=method,
            target=c.target, budget=c.budget, criterion=c.criterion, groups=env.graph.groups,
            removed=removed, achieved=env.budget.achieved(counts), costs=env.costs(counts),
            accuracy=accuracy, search=search_info)
    return build_policy(
        model=c.model, dataset=c.dataset, fingerprint=fingerprint, method=method,
        target=c.target, scope=c.scope, net=env.net, sparsities=sparsities,
        fc_rule=c.fc_rule, fc_k=env.fc.k, costs=nonzero_costs(env.net, sparsities),
        accuracy=accuracy, search=search_info)


def _three_sigma_everywhere(c: SearchConfig, dense: Dense, fingerprint: str, accuracy: dict
                            ) -> dict:
    """The k-sigma rule (k=3) on every layer; its sparsity is whatever the rule gives."""
    net = describe(dense.model, dense.input_shape, "3sigma")
    for layer in net.layers:
        layer.owner = "fc-rule"
    k = 3.0
    sparsities = {layer.name: 1.0 - float(sigma_mask(layer.module.weight, k).float().mean())
                  for layer in net.layers}
    return build_policy(
        model=c.model, dataset=c.dataset, fingerprint=fingerprint, method="3sigma-only",
        target=c.target, scope="total", net=net, sparsities=sparsities, fc_rule="3sigma",
        fc_k=k, costs=nonzero_costs(net, sparsities), accuracy=accuracy,
        search={"seed": c.seed})
