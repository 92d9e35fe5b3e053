"""Shared fixtures: a tiny CNN with hand-checkable sizes, a tiny val split, a CLI runner.

The tiny net (input 1x8x8) has five prunable layers:

    c1  Conv2d(1, 4, 3, pad 1)            36 weights, out 8x8,  FLOPs 4*64*1*9  =  2,304
    c2  Conv2d(4, 8, 3, stride 2, pad 1)  288 weights, out 4x4, FLOPs 8*16*4*9  =  4,608
    bn  BatchNorm2d(8)
    c3  Conv2d(8, 16, 3, pad 1)         1,152 weights, out 4x4, FLOPs 16*16*8*9 = 18,432
    f1  Linear(64, 32)                  2,048 weights,          FLOPs            =  2,048
    f2  Linear(32, 10)                    320 weights,          FLOPs            =    320

Weights are Gaussian (seeded), so the k-sigma rule behaves as on trained weights and dense
weights contain no exact zeros: counting zeros counts pruned weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from rlprune.models.splits import Split

TINY_INPUT = (1, 8, 8)
TINY_CONV = {"c1": 36, "c2": 288, "c3": 1152}
TINY_FC = {"f1": 2048, "f2": 320}
TINY_WEIGHTS = {**TINY_CONV, **TINY_FC}
TINY_FLOPS = {"c1": 2304, "c2": 4608, "c3": 18432, "f1": 2048, "f2": 320}
# biases 4+8+16+32+10 = 70, BatchNorm weight+bias 2*8 = 16
TINY_PARAMS = sum(TINY_WEIGHTS.values()) + 70 + 16


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.f1 = nn.Linear(64, 32)
        self.f2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.bn(self.c2(x)))
        x = torch.relu(self.c3(x))
        return self.f2(torch.relu(self.f1(self.pool(x).flatten(1))))


def make_tiny(seed: int = 0, num_classes: int = 10) -> TinyNet:
    """A TinyNet with seeded Gaussian weights and non-trivial BatchNorm statistics, in eval."""
    model = TinyNet(num_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "bn.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("weight"):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        model.bn.running_mean.copy_(0.2 * torch.randn(8, generator=gen))
        model.bn.running_var.copy_(0.5 + torch.rand(8, generator=gen))
    return model.eval()


def tiny_images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *TINY_INPUT, generator=torch.Generator().manual_seed(seed))


def tiny_split(n: int = 64, seed: int = 1, model_seed: int = 0) -> Split:
    """n random 1x8x8 images labelled by the dense tiny model: its val accuracy is exactly 1."""
    x = tiny_images(n, seed)
    with torch.no_grad():
        y = make_tiny(model_seed)(x).argmax(1)
    return Split(x, y)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_factory() -> Callable[..., TinyNet]:
    return make_tiny


@pytest.fixture
def tiny_model() -> TinyNet:
    return make_tiny(0)


@pytest.fixture(scope="session")
def tiny_val() -> Split:
    return tiny_split(64, seed=1)


@pytest.fixture(scope="session")
def tiny_calibration() -> Split:
    x = tiny_images(256, seed=2) * 2.0 + 0.5  # other statistics than the stored ones
    return Split(x, torch.zeros(256, dtype=torch.long))


def make_tiny_dense():
    """A search's view of the tiny net: its train/val/test splits and the untrained model."""
    from rlprune.models.data import Data, DataSpec
    from rlprune.models.dense import Dense

    data = Data(tiny_split(128, 3), tiny_split(64, 1), tiny_split(64, 4), name="tiny",
                spec=DataSpec(*TINY_INPUT, 10))
    return Dense(data, make_tiny(0), weights=None, test_accuracy=1.0)


@pytest.fixture
def tiny_dense():
    return make_tiny_dense()


FLEET_WANTED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(session, config, items):
    """Whether this session's tests use the fleet (support.fleet): then it is started in the
    background as the session begins (see `fleet_in_background`)."""
    config.stash[FLEET_WANTED] = any(
        "fleet" in item.fixturenames or hasattr(getattr(item, "module", None), "get_fleet")
        for item in items)


class XdistGroups:
    """xdist's groups (`--dist loadgroup`): a module's tests run in one worker (its
    module-scoped fixtures, a service for one, are made once), and every module that uses the
    local Ray instance (`ray_cluster`, as a fixture or by `getfixturevalue`) joins one group,
    so that one worker starts Ray, not both. In that group test_workers.py goes first: run
    after the service's Ray jobs, its bench on Ray once waited in `ray.wait` for good (Ray
    idle; docs/decisions.md, "The test suite's time")."""

    RAY_FIRST = "tests/test_workers.py"

    @pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
    def pytest_collection_modifyitems(self, items) -> None:
        uses_ray: dict[Path, bool] = {}
        for item in items:
            if item.path not in uses_ray:
                uses_ray[item.path] = "ray_cluster" in item.path.read_text()
            group = "ray" if uses_ray[item.path] else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
        # stable: only test_workers.py's tests move, ahead of the rest (xdist then orders the
        # groups by their number of tests)
        items.sort(key=lambda item: item.nodeid.split("::")[0] != self.RAY_FIRST)


def pytest_configure(config):
    config.pluginmanager.register(XdistGroups(), "rlprune-xdist-groups")


@pytest.fixture(scope="session", autouse=True)
def fleet_in_background(request, tmp_path_factory):
    if request.config.stash.get(FLEET_WANTED, False):
        from support.fleet import build_in_background

        build_in_background(tmp_path_factory)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """The crash/resume scenarios (support.fleet), run once per session (all workers)."""
    from support import get_fleet

    return get_fleet(tmp_path_factory)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """tmp_path as the current directory: whatever a command writes shows up there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Run `rlprune ARGS` in-process; returns (exit code, stdout, stderr)."""
    from rlprune.service.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors exit through SystemExit
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def mnist5k():
    from rlprune.models.data import load_dataset

    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance with 2 CPUs (its address), shared by the Ray tests; its
    processes find the tests' modules (the tiny net, the user models) on their path."""
    import ray  # in the test extra: a missing Ray fails these tests, never skips them

    saved = os.environ.get("PYTHONPATH")
    tests = Path(__file__).parent  # Ray's processes inherit it from this one
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tests), str(tests / "usermodels"), saved) if p)
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                           configure_logging=False)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    yield context.address_info["gcs_address"]
    ray.shutdown()
