"""report.md's sparsity plot: the bars are what each layer (group) lost, the target is shown
for what it is (a line only where it is the bars' own quantity), and the legend hides no bar."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle

from rlprune.service.jobs.report import plot_sparsity, sparsity_figure

LAYERS = [("conv1", "agent", 0.4), ("conv2", "agent", 0.95), ("fc1", "fc-rule", 0.97),
          ("classifier", "none", 0.0)]


def weight_policy(scope: str = "total", target: float = 0.9) -> dict:
    return {"granularity": "weight", "model": "m", "dataset": "d", "method": "ddpg",
            "target": {"sparsity": target, "scope": scope}, "achieved": {"sparsity": target},
            "layers": [{"name": n, "kind": "conv", "owner": o, "params": 100, "sparsity": s}
                       for n, o, s in LAYERS]}


def channel_policy(budget: str = "flops") -> dict:
    groups = [{"name": f"features.{i}", "kind": "conv", "channels": 16,
               "removed": list(range(i)), "sparsity": i / 16, "layers": []} for i in range(6)]
    return {"granularity": "channel", "model": "m", "dataset": "d", "method": "ddpg",
            "budget": budget, "target": {"sparsity": 0.5, "budget": budget},
            "achieved": {"sparsity": 0.5012, "budget": budget}, "groups": groups}


def _drawn(policy: dict):
    fig = sparsity_figure(policy)
    ax = fig.axes[0]
    bars = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
    legend = ax.get_legend()
    fig.canvas.draw()
    outside = legend.get_window_extent().x0 >= ax.get_window_extent().x1
    texts = [t.get_text() for t in legend.get_texts()]
    lines = [line.get_ydata() for line in ax.get_lines()]
    plt.close(fig)
    return bars, texts, lines, outside


@pytest.mark.parametrize(("scope", "which"), [("total", "of all prunable weights"),
                                              ("agent", "of the agent's layers' weights")])
def test_weight_mode_draws_the_target_as_the_bars_own_quantity(scope, which):
    bars, texts, lines, outside = _drawn(weight_policy(scope, 0.8))
    assert bars == pytest.approx([100 * s for _, _, s in LAYERS])
    assert texts == [f"target: 80% {which}", "agent", "fc-rule", "none"]
    assert [list(y) for y in lines] == [[80.0, 80.0]]
    assert outside  # the last bar (the classifier) is never under the legend


@pytest.mark.parametrize(("budget", "name"), [("flops", "FLOPs"), ("latency",
                                                                   "estimated latency")])
def test_channel_mode_states_the_network_budget_instead_of_a_line_over_the_bars(budget, name):
    bars, texts, lines, outside = _drawn(channel_policy(budget))
    assert bars == pytest.approx([100 * i / 16 for i in range(6)])
    assert lines == []  # a fraction of the network's FLOPs is not a group's channels
    assert texts[0] == f"whole network: 50.1% of its {name} removed (target 50%)"
    assert outside


def test_the_plot_is_written(tmp_path):
    plot_sparsity(channel_policy(), tmp_path / "sparsity.png")
    assert (tmp_path / "sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
