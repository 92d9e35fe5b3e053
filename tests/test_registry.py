"""The model registry, `rlprune inspect` totals (checked against hand counts), user models."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from rlprune.models.data import SPECS
from rlprune.models.errors import UserError
from rlprune.models.registry import DEFAULT_DATASET, MODELS, arch_fingerprint, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# -- hand counts ------------------------------------------------------------------------------
# LeNet-5 (Caffe): conv 20 and 50 5x5 on 1x28x28, FC 800 -> 500 -> 10.
LENET5_PARAMS = conv(1, 20, 5) + conv(20, 50, 5) + linear(800, 500) + linear(500, 10)
LENET5_BIASES = 20 + 50 + 500 + 10
# fvcore counts one multiply-add as one FLOP: out_ch * out_h * out_w * in_ch * k * k.
LENET5_FLOPS = 20 * 24 * 24 * 1 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10

# VGG16-BN on CIFAR-10: 13 conv 3x3 (with bias) each followed by BatchNorm (weight + bias),
# classifier 512 -> 4096 -> 4096 -> 10.
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_FCS = [(512, 4096), (4096, 4096), (4096, 10)]
VGG16_PARAMS = (sum(conv(a, b, 3) + 2 * b for a, b in VGG16_CONVS)
                + sum(linear(a, b) for a, b in VGG16_FCS))
VGG16_BIAS_AND_BN = sum(3 * b for _, b in VGG16_CONVS) + sum(b for _, b in VGG16_FCS)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_hand_counts_match_the_spec():
    # The numbers the design document states; guards the hand formulas above.
    assert LENET5_PARAMS == 431_080
    assert VGG16_PARAMS == 33_646_666
    assert LENET5_FLOPS == 2_293_000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_builds_and_runs(name):
    spec = SPECS[DEFAULT_DATASET[name]]
    torch.manual_seed(0)
    model = build_model(name, spec.num_classes, spec.in_channels, spec.image_size).eval()
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        out = model(torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size))
    assert out.shape == (2, spec.num_classes)


def test_registry_models_fit_other_shapes():
    # One name works on MNIST- and CIFAR-shaped data alike.
    for name in ("lenet5", "vgg-mini", "resnet56"):
        for cin, size, classes in ((1, 28, 10), (3, 32, 100)):
            model = build_model(name, classes, cin, size).eval()
            with torch.no_grad():
                assert model(torch.zeros(1, cin, size, size)).shape == (1, classes)


def test_param_counts_by_hand():
    assert n_params(build_model("lenet5")) == LENET5_PARAMS
    lenet300 = linear(784, 300) + linear(300, 100) + linear(100, 10)
    assert n_params(build_model("lenet300")) == lenet300
    assert n_params(build_model("vgg16", 10, 3, 32)) == VGG16_PARAMS
    # The classifier widths are a parameter of vgg16.
    small = MODELS["vgg16"](10, 3, 32, classifier=(256,))
    expected = (VGG16_PARAMS - sum(linear(a, b) for a, b in VGG16_FCS)
                + linear(512, 256) + linear(256, 10))
    assert n_params(small) == expected
    # CIFAR ResNet-56, option-B shortcuts (a 1x1 conv + BN where the shape changes): 3 stages
    # of 9 blocks.
    resnet = conv(3, 16, 3, bias=False) + 2 * 16 + linear(64, 10)
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(9):
            resnet += conv(cin, cout, 3, bias=False) + conv(cout, cout, 3, bias=False) + 4 * cout
            if cin != cout:
                resnet += conv(cin, cout, 1, bias=False) + 2 * cout
            cin = cout
    assert n_params(build_model("resnet56", 10, 3, 32)) == resnet


def test_vgg_mini_shape_of_the_spec():
    model = build_model("vgg-mini")
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.Conv2d) >= 8
    assert kinds.count(nn.BatchNorm2d) == kinds.count(nn.Conv2d)
    assert kinds.count(nn.Linear) == 2


def test_inspect_lenet5_json(cli):
    code, out, err = cli("inspect", "--model", "lenet5", "--json")
    assert code == 0, err
    report = json.loads(out)
    totals = report["totals"]
    assert report["dataset"] == "mnist5k"
    assert totals["params"] == LENET5_PARAMS
    assert totals["prunable_weights"] == LENET5_PARAMS - LENET5_BIASES == 430_500
    assert totals["flops"] == LENET5_FLOPS
    # Convolutions belong to the agent, FC layers to the 3-sigma rule.
    assert totals["by_owner"] == {"agent": 20 * 25 + 50 * 20 * 25,
                                  "fc-rule": 800 * 500 + 500 * 10, "none": 0}
    assert [row["name"] for row in report["layers"]] == ["c1", "c2", "f1", "f2"]
    assert [row["params"] for row in report["layers"]] == [500, 25_000, 400_000, 5_000]


def test_inspect_fc_rule_moves_fc_layers(cli):
    code, out, _ = cli("inspect", "--model", "lenet5", "--json", "--fc-rule", "agent")
    assert code == 0
    assert json.loads(out)["totals"]["by_owner"] == {"agent": 430_500, "fc-rule": 0, "none": 0}
    code, out, _ = cli("inspect", "--model", "lenet5", "--json", "--fc-rule", "none")
    assert json.loads(out)["totals"]["by_owner"] == {"agent": 25_500, "fc-rule": 0,
                                                     "none": 405_000}


def test_inspect_vgg16_json(cli):
    code, out, err = cli("inspect", "--model", "vgg16", "--json")
    assert code == 0, err
    report = json.loads(out)
    totals = report["totals"]
    assert report["dataset"] == "cifar10"
    assert totals["params"] == VGG16_PARAMS
    assert totals["prunable_weights"] == VGG16_PARAMS - VGG16_BIAS_AND_BN
    assert totals["by_owner"]["fc-rule"] == sum(a * b for a, b in VGG16_FCS)
    assert len(report["layers"]) == 16


def test_inspect_text_output(cli):
    code, out, _ = cli("inspect", "--model", "lenet5")
    assert code == 0
    assert "431,080" in out and "430,500" in out


def test_arch_fingerprint_depends_on_architecture_only():
    torch.manual_seed(0)
    a = build_model("lenet5")
    torch.manual_seed(1)
    b = build_model("lenet5")
    assert not torch.equal(a.c1.weight, b.c1.weight)
    assert arch_fingerprint(a) == arch_fingerprint(b)
    assert arch_fingerprint(a).startswith("sha256:")
    assert arch_fingerprint(a) != arch_fingerprint(build_model("lenet5", num_classes=5))
    assert arch_fingerprint(a) != arch_fingerprint(build_model("lenet300"))


# -- user models --------------------------------------------------------------------------------
USER_MODULE = "rlprune_test_user_models"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / f"{USER_MODULE}.py").write_text(textwrap.dedent("""
        from torch import nn

        def make(num_classes=10, in_channels=1):
            return nn.Sequential(nn.Conv2d(in_channels, 3, 3), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(3 * 26 * 26, num_classes))

        def make_any(**kwargs):
            make_any.seen = kwargs
            return make(kwargs["num_classes"], kwargs["in_channels"])

        def not_a_model():
            return 42

        def fails(num_classes):
            raise ValueError("no such width")

        NOT_CALLABLE = 3
    """))
    (tmp_path / "rlprune_test_broken_module.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield USER_MODULE
    for name in (USER_MODULE, "rlprune_test_broken_module"):
        sys.modules.pop(name, None)


def test_user_factory_builds(user_module):
    model = build_model(f"{user_module}:make", num_classes=7, in_channels=1, image_size=28)
    assert n_params(model) == conv(1, 3, 3) + linear(3 * 26 * 26, 7)
    model = build_model(f"{user_module}:make_any", num_classes=7, in_channels=1, image_size=28)
    assert sys.modules[user_module].make_any.seen == {"num_classes": 7, "in_channels": 1,
                                                      "image_size": 28}


def test_user_factory_via_inspect(cli, user_module):
    code, out, err = cli("inspect", "--model", f"{user_module}:make", "--json")
    assert code == 0, err
    totals = json.loads(out)["totals"]
    assert totals["params"] == conv(1, 3, 3) + linear(3 * 26 * 26, 10)
    assert totals["prunable_weights"] == 3 * 9 + 3 * 26 * 26 * 10
    assert totals["by_owner"] == {"agent": 27, "fc-rule": 3 * 26 * 26 * 10, "none": 0}


@pytest.mark.parametrize("spec, words", [
    ("rlprune_no_such_module_xyz:make", "cannot import"),
    ("rlprune_test_broken_module:make", "cannot import"),
    (f"{USER_MODULE}:missing", "no callable"),
    (f"{USER_MODULE}:NOT_CALLABLE", "no callable"),
    (f"{USER_MODULE}:not_a_model", "not a torch.nn.Module"),
    (f"{USER_MODULE}:fails", "factory failed .ValueError: no such width"),
    ("nope", "unknown model"),
])
def test_bad_model_names_are_refused(user_module, spec, words):
    with pytest.raises(UserError, match=words) as info:
        build_model(spec)
    assert spec in str(info.value)


def test_unknown_model_lists_choices():
    with pytest.raises(UserError) as info:
        build_model("nope")
    for name in MODELS:
        assert name in str(info.value)
