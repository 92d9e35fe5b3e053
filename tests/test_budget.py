"""The two-sided budget clamp (env.budget.Budget), by hand and as a property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlprune.env.budget import Budget
from rlprune.models.errors import UserError


def test_bounds_by_hand():
    # N = 100, F = 10 pruned by the FC rule, agent layers of 20, 30 and 50 weights, s_max 0.9.
    b = Budget(target=0.5, total=100, fixed=10, sizes=[20, 30, 50], s_max=0.9)
    assert b.goal == 50 and b.agent_goal == 40
    assert b.highs == [18, 27, 45] and b.lows == [0, 0, 0]
    b.check()
    assert b.bounds(0, 0) == (0, 18)  # later layers can absorb everything
    assert b.bounds(1, 18) == (0, 22)  # the 22 left bound the upper side
    assert b.bounds(2, 18) == (22, 22)  # the last layer closes the budget exactly
    assert b.bounds(2, 40) == (0, 0)
    assert b.clamp(0, 0, 0.95) == 18
    assert b.clamp(1, 18, 0.9) == 22
    assert b.clamp(2, 18, 0.0) == 22


def test_lower_clamp_binds():
    # 90 of 100 must go and each layer can lose at most 45: both are forced to 45.
    b = Budget(target=0.9, total=100, fixed=0, sizes=[50, 50], s_max=0.9)
    b.check()
    assert b.bounds(0, 0) == (45, 45)
    assert b.clamp(0, 0, 0.0) == 45
    assert b.clamp(1, 45, 0.0) == 45


def test_s_min_lower_bound():
    b = Budget(target=0.5, total=100, fixed=0, sizes=[50, 50], s_min=0.2, s_max=0.9)
    b.check()
    assert b.lows == [10, 10]
    assert b.bounds(0, 0) == (10, 40)  # leave at least s_min for the last layer
    assert b.clamp(0, 0, 0.0) == 10 and b.clamp(1, 10, 0.0) == 40


@pytest.mark.parametrize("budget, words", [
    (Budget(0.5, 100, 0, []), "no layers"),
    (Budget(0.3, 100, 40, [60]), "FC rule alone prunes 40"),
    (Budget(0.9, 100, 0, [50, 50], s_max=0.8), "at most 80"),
    (Budget(0.1, 100, 0, [50, 50], s_min=0.2), "below what s_min"),
])
def test_check_refuses_infeasible(budget, words):
    with pytest.raises(UserError, match=words):
        budget.check()


@st.composite
def budgets(draw):
    sizes = draw(st.lists(st.integers(1, 5000), min_size=1, max_size=8))
    outside = draw(st.integers(0, 20000))  # prunable weights outside the agent's layers
    fixed = draw(st.integers(0, outside))
    s_min = draw(st.sampled_from([0.0, 0.05, 0.3]))
    s_max = draw(st.sampled_from([0.5, 0.9, 0.99, 1.0]))
    target = draw(st.floats(0.001, 0.999))
    asks = draw(st.lists(st.floats(-0.5, 1.5), min_size=len(sizes), max_size=len(sizes)))
    return Budget(target, sum(sizes) + outside, fixed, sizes, s_min, s_max), asks


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(budgets())
def test_any_requests_land_exactly_on_goal(case):
    budget, asks = case
    goal = round(budget.target * budget.total)
    highs = [round(budget.s_max * w) for w in budget.sizes]
    lows = [round(budget.s_min * w) for w in budget.sizes]
    feasible = sum(lows) <= goal - budget.fixed <= sum(highs)
    if not feasible:
        with pytest.raises(UserError):
            budget.check()
        return
    budget.check()
    pruned = 0
    for t, (w, ask) in enumerate(zip(budget.sizes, asks)):
        lo, hi = budget.bounds(t, pruned)
        assert lows[t] <= lo <= hi <= highs[t]
        n = budget.clamp(t, pruned, ask)
        assert lo <= n <= hi
        want = round(min(max(ask, 0.0), 1.0) * w)
        if lo <= want <= hi:
            assert n == want  # a request within the bounds is granted as asked
        else:
            assert n == (lo if want < lo else hi)  # else the nearest bound
        pruned += n
    assert budget.fixed + pruned == goal
