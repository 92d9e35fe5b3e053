"""The two-sided clamp of a channel episode: it ends on the FLOPs (or params) target.

Counts are channels removed per group. With `C(r)` the network's cost when group g loses
r_g channels (exact and monotone: `ChannelGraph.cost`) and `goal = (1 - T) · C(0)`, group t
may lose between the fewest that still lets the later groups reach the goal when they lose
all they may, and the most that still lets them stay at the goal when they lose the least.
The episode then lands on the goal to within one channel of one group.

With `round_to` N > 1 a group keeps a multiple of N channels, or all of them: its counts are
those choices (within s_min / s_max), the bounds are searched among them, and the episode
lands on the goal to within N channels of one group.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

from rlprune.env.channels import ChannelGraph
from rlprune.env.masks import count_for
from rlprune.models.errors import SettingError


@dataclass
class ChannelBudget:
    graph: ChannelGraph
    budget: str  # "flops" | "params"
    target: float  # the fraction of the cost removed
    s_min: float = 0.0
    s_max: float = 0.99
    round_to: int = 1
    sizes: list[int] = field(init=False)
    lows: list[int] = field(init=False)  # fewest channels each group loses
    highs: list[int] = field(init=False)  # most (a group always keeps one)

    def __post_init__(self) -> None:
        self.sizes = [g.channels for g in self.graph.groups]
        self.lows = [count_for(n, self.s_min) for n in self.sizes]
        self.highs = [max(0, min(n - 1, count_for(n, self.s_max))) for n in self.sizes]
        self.lows = [min(lo, hi) for lo, hi in zip(self.lows, self.highs)]
        # the counts each group may lose, ascending: every one, or those keeping a multiple
        self.choices = [_choices(n, lo, hi, self.round_to)
                        for n, lo, hi in zip(self.sizes, self.lows, self.highs)]
        self.lows = [c[0] for c in self.choices]
        self.highs = [c[-1] for c in self.choices]

    @property
    def total(self) -> float:
        return self.graph.total[self.budget]

    @property
    def goal(self) -> float:
        """The cost an episode ends at: (1 - target) of the dense network's."""
        return (1.0 - self.target) * self.total

    def cost(self, removed: list[int]) -> float:
        return self.graph.cost(np.array(self.sizes) - np.array(removed), self.budget)

    def reachable(self) -> bool:
        """Whether the goal can be reached with every group at its most."""
        return self.cost(self.highs) <= self.goal

    def check(self) -> None:
        """Refuse a target the groups cannot reach, with the numbers that say why."""
        if not self.sizes:
            raise no_groups_error()
        if not self.reachable():
            most = 1.0 - self.cost(self.highs) / self.total
            raise SettingError(
                "target", f"target {self.target:g} of the {self.budget} needs more than the "
                f"channel groups can give: at most {most:.4f} can go with every group keeping a "
                f"channel (s_max={self.s_max:g}); lower `target`, or use `budget` "
                f"{'params' if self.budget == 'flops' else 'flops'} or `granularity` weight",
                others=("budget", "granularity"), lead=False)
        if self.cost(self.lows) < self.goal:
            raise SettingError("target", f"target {self.target:g} is below what s_min="
                               f"{self.s_min:g} removes; raise `target` or lower `s_min`",
                               others=("s_min",), lead=False)

    def _cost_with(self, t: int, removed_before: list[int], r: int, rest: list[int]) -> float:
        return self.cost([*removed_before, r, *rest[t + 1:]])

    def bounds(self, t: int, removed_before: list[int]) -> tuple[int, int]:
        """The fewest and most channels group t may lose after `removed_before` (one count per
        earlier group), both among its choices."""
        choices = self.choices[t]
        # fewest: losing r here, the later groups at their most must still get down to goal
        lo = _first(choices, lambda r: self._cost_with(t, removed_before, r, self.highs)
                    <= self.goal)
        # most: losing r here, the later groups at their least must not go below goal
        hi = _last(choices, lambda r: self._cost_with(t, removed_before, r, self.lows)
                   >= self.goal)
        if lo is None:
            lo = choices[-1]  # cannot get down to goal whatever: lose all it may
        if hi is None:
            hi = choices[0]  # already below goal whatever: lose the least
        if lo > hi:  # no choice keeps both sides: take the nearer one
            over = self._cost_with(t, removed_before, hi, self.highs) - self.goal
            under = self.goal - self._cost_with(t, removed_before, lo, self.lows)
            lo = hi = hi if over <= under else lo
        return lo, hi

    def snap(self, t: int, removed: int, lo: int, hi: int) -> int:
        """The choice of group t in [lo, hi] (both choices) nearest to `removed`."""
        removed = min(hi, max(lo, removed))
        choices = self.choices[t]
        i = bisect_left(choices, removed)
        if choices[min(i, len(choices) - 1)] == removed:
            return removed
        below, above = choices[max(i - 1, 0)], choices[min(i, len(choices) - 1)]
        return below if removed - below <= above - removed else above

    def clamp(self, t: int, removed_before: list[int], removed: int) -> int:
        lo, hi = self.bounds(t, removed_before)
        return self.snap(t, removed, lo, hi)

    def achieved(self, removed: list[int]) -> float:
        """The fraction of the cost the counts remove."""
        return 1.0 - self.cost(removed) / self.total


def _choices(n: int, low: int, high: int, round_to: int) -> list[int]:
    """The counts a group of n channels may lose within [low, high]: all, or (round_to > 1)
    those that keep a multiple of round_to channels, and none at all; at least one."""
    if round_to <= 1:
        return list(range(low, high + 1))
    found = [r for r in range(low, high + 1) if r == 0 or (n - r) % round_to == 0]
    return found or [low]


def _first(choices: list[int], ok) -> int | None:
    """The smallest choice with ok(r) (ok monotone: False then True), or None."""
    if not ok(choices[-1]):
        return None
    lo, hi = 0, len(choices) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(choices[mid]):
            hi = mid
        else:
            lo = mid + 1
    return choices[lo]


def _last(choices: list[int], ok) -> int | None:
    """The largest choice with ok(r) (ok monotone: True then False), or None."""
    if not ok(choices[0]):
        return None
    lo, hi = 0, len(choices) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(choices[mid]):
            lo = mid
        else:
            hi = mid - 1
    return choices[lo]


def no_groups_error() -> SettingError:
    return SettingError("granularity", "the model has no channel group to prune (every layer "
                        "feeds the output directly); use `granularity` weight", lead=False)
