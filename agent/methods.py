"""Every way a job can choose an allocation, by name: one registry, one `Method` each.

A method is a *search* (episodes in the env: DDPG, random search, TPE; they register
themselves where they are defined, `rlprune.agent.search` and `rlprune.agent.tpe`), a
*variant* of a search (the same search with other settings: a bench's `ddpg-only`, `td3`), or a
*rule* (one allocation computed from the dense weights on the env's exact budget: the
baselines, which can also seed a search's warm-up, or the k-sigma rule on every layer, which
makes its own policy). A new method is one `register(Method(...))`:

    register(Method("first-half", granularities=("weight",), allocate=my_counts))

This module imports nothing of the search, so that `SearchConfig` can check seed-policy names
against it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlprune.models.errors import SettingError


@dataclass(frozen=True)
class Method:
    """One way to choose an allocation.

    :param name: what jobs, benches and policies call it
    :param granularities: the granularities it can prune (None: any, as a search can)
    :param search: a search: `search(config, dense, on_episode=..., should_stop=...)` makes the
        object whose `run()` plays the episodes (`Search`, `TpeSearch`)
    :param allocate: a rule on the env's budget: `allocate(env)` -> the count pruned in each
        agent layer (weights, or a group's channels), the way `env.baseline_counts` gives them
    :param policy: a rule that makes its whole policy itself: `policy(config, dense)`
    :param seed_policy: a rule whose allocation a search plays among its first warm-up episodes
    :param uses_agent: a search whose algorithm the `agent` setting chooses (ddpg or td3)
    :param learns: False for a search that never learns (every episode is warm-up)
    :param one_worker: a search that plays one episode at a time (`workers` must be 1)
    :param variant_of: the search this method is, run with `settings` changed
    :param settings: the settings a variant changes
    :param in_default_bench: the granularities whose `rlprune bench` runs it by default
    """

    name: str
    granularities: tuple[str, ...] | None = None
    search: Callable[..., Any] | None = None
    allocate: Callable[[Any], list[int]] | None = None
    policy: Callable[[Any, Any], dict] | None = None
    seed_policy: bool = False
    uses_agent: bool = False
    learns: bool = True
    one_worker: bool = False
    variant_of: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    in_default_bench: tuple[str, ...] = ()

    def applies_to(self, granularity: str) -> bool:
        return self.granularities is None or granularity in self.granularities

    @property
    def kind(self) -> str:
        if self.variant_of is not None:
            return "variant"
        return "search" if self.search is not None else "rule"


METHODS: dict[str, Method] = {}
_ORDER = {"search": 0, "variant": 1, "rule": 2}


def register(method: Method) -> Method:
    """Add `method` to the registry (a name registered again is replaced)."""
    if (method.search is None) + (method.allocate is None) + (method.policy is None) \
            + (method.variant_of is None) != 3:
        raise ValueError(f"method {method.name}: give exactly one of search, allocate, "
                         "policy or variant_of")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def methods_for(granularity: str, *, variants: bool = False) -> tuple[str, ...]:
    """The methods of `granularity`, searches first, then variants (with `variants`), then
    rules, each in the order they registered."""
    order = list(METHODS)
    chosen = [m for m in METHODS.values() if m.applies_to(granularity)
              and (variants or m.kind != "variant")]
    chosen.sort(key=lambda m: (_ORDER[m.kind], order.index(m.name)))
    return tuple(m.name for m in chosen)


def method_named(name: str, granularity: str, *, variants: bool = False) -> Method:
    """The method `name` for `granularity`, or a refusal listing the choices."""
    known = methods_for(granularity, variants=variants)
    if name not in known:
        raise SettingError("method", f"{name!r} is not a method for granularity {granularity}; "
                           f"choose from {', '.join(known)}")
    return METHODS[name]


def seed_policies(granularity: str) -> tuple[str, ...]:
    """The rules a search of `granularity` can play as seed policies (all of them by default)."""
    return tuple(m.name for m in METHODS.values()
                 if m.seed_policy and m.applies_to(granularity))


def default_bench(granularity: str) -> tuple[str, ...]:
    return tuple(m for m in methods_for(granularity, variants=True)
                 if granularity in METHODS[m].in_default_bench)


# -- the built-in rules and variants ---------------------------------------------------------
def _baseline(name: str) -> Callable[[Any], list[int]]:
    def allocate(env) -> list[int]:
        return env.baseline_counts(name)

    return allocate


def _three_sigma_everywhere(config, dense) -> dict:
    """The k-sigma rule (k=3) on every layer; its sparsity is whatever the rule gives."""
    from rlprune.env.layers import describe, nonzero_costs
    from rlprune.env.masks import sigma_mask
    from rlprune.env.policy import build_policy
    from rlprune.models.registry import arch_fingerprint

    net = describe(dense.model, dense.input_shape, "3sigma")
    for layer in net.layers:
        layer.owner = "fc-rule"
    k = 3.0
    sparsities = {layer.name: 1.0 - float(sigma_mask(layer.module.weight, k).float().mean())
                  for layer in net.layers}
    return build_policy(
        model=config.model, dataset=config.dataset, fingerprint=arch_fingerprint(dense.model),
        method="3sigma-only", target=config.target, scope="total", net=net,
        sparsities=sparsities, fc_rule="3sigma", fc_k=k, costs=nonzero_costs(net, sparsities),
        accuracy={"dense": dense.test_accuracy}, search={"seed": config.seed})


register(Method("ddpg-only", ("weight",), variant_of="ddpg", settings={"fc_rule": "agent"},
                in_default_bench=("weight",)))
register(Method("td3", variant_of="ddpg", settings={"agent": "td3"}))
register(Method("3sigma-only", ("weight",), policy=_three_sigma_everywhere,
                in_default_bench=("weight",)))
for _name, _where in (("uniform", ("weight", "channel")), ("global", ("weight",)),
                      ("lamp", ("weight",)), ("erk", ("weight",)),
                      ("global-l1", ("channel",)), ("global-taylor", ("channel",))):
    register(Method(_name, _where, allocate=_baseline(_name), seed_policy=True,
                    in_default_bench=_where))
