"""Bad input on the command line: one line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rlprune.models.registry import MODELS
from rlprune.models.train import read_weights


def assert_one_line_error(code, err: str) -> str:
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("rlprune: error:"), repr(err)
    assert "Traceback" not in err
    return err


def assert_empty(path):
    assert list(path.iterdir()) == [], sorted(p.name for p in path.rglob("*"))


def test_unknown_model(cli, workdir):
    for command in ("inspect", "pretrain"):
        code, out, err = cli(command, "--model", "nope")
        assert_one_line_error(code, err)
        assert "unknown model 'nope'" in err
        assert all(name in err for name in MODELS)  # the choices are listed
        assert out == ""
    assert_empty(workdir)


def test_unknown_dataset(cli, workdir):
    code, _, err = cli("inspect", "--model", "lenet5", "--dataset", "nope")
    assert "unknown dataset 'nope'" in assert_one_line_error(code, err)
    assert "mnist5k" in err and "cifar10" in err
    code, _, err = cli("pretrain", "--model", "lenet5", "--dataset", "nope", "--out", "x.pt")
    assert "unknown dataset" in assert_one_line_error(code, err)
    assert_empty(workdir)


@pytest.mark.parametrize("spec", ["rlprune_no_such_module_xyz:make", "os.path:no_such_factory",
                                  "json:dumps"])
def test_model_path_that_does_not_import_or_build(cli, workdir, spec):
    code, _, err = cli("inspect", "--model", spec)
    assert spec in assert_one_line_error(code, err)
    code, _, err = cli("pretrain", "--model", spec, "--dataset", "digits", "--out", "x.pt")
    assert_one_line_error(code, err)
    assert_empty(workdir)


def test_pretrain_refuses_to_overwrite(cli, workdir, one_thread):
    out = workdir / "model.pt"
    out.write_bytes(b"precious")
    before = out.stat().st_mtime_ns
    code, _, err = cli("pretrain", "--model", "lenet300", "--dataset", "digits", "--epochs",
                       "1", "--out", str(out))
    assert "--force" in assert_one_line_error(code, err)
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before
    assert [p.name for p in workdir.iterdir()] == ["model.pt"]
    # --force overwrites it with a real checkpoint.
    code, _, err = cli("pretrain", "--model", "lenet300", "--dataset", "digits", "--epochs",
                       "1", "--device", "cpu", "--out", str(out), "--force")
    assert code == 0, err
    assert read_weights(out)["meta"]["model"] == "lenet300"


def test_missing_cifar_without_download(cli, workdir):
    data_dir = workdir / "data"
    code, _, err = cli("pretrain", "--model", "lenet5", "--dataset", "cifar10", "--data-dir",
                       str(data_dir), "--out", str(workdir / "x.pt"))
    assert_one_line_error(code, err)
    assert "cifar10" in err and "--download" in err
    assert not (workdir / "x.pt").exists()
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


@pytest.mark.parametrize("epochs", ["0", "-3", "abc", "1.5"])
def test_bad_epochs(cli, workdir, epochs):
    code, _, err = cli("pretrain", "--model", "lenet300", "--dataset", "digits", "--epochs",
                       epochs, "--out", "x.pt")
    assert "epochs" in assert_one_line_error(code, err)
    assert_empty(workdir)


@pytest.mark.parametrize("argv", [
    ["inspect", "--fc-rule", "bogus"],
    ["inspect", "--no-such-flag"],
    ["no-such-command"],
    ["pretrain", "--device", "tpu"],
])
def test_argparse_errors_are_one_line(cli, workdir, argv):
    code, _, err = cli(*argv)
    assert_one_line_error(code, err)
    assert_empty(workdir)


@pytest.mark.parametrize("target", ["0", "1", "1.5", "-0.2", "abc"])
def test_search_target_outside_unit_interval(cli, workdir, target):
    from rlprune.service.cli import commands

    if "search" not in commands.HANDLERS:
        pytest.skip("`rlprune search` is not implemented yet")
    code, _, err = cli("search", "--target", target)
    assert "target" in assert_one_line_error(code, err)
    assert_empty(workdir)


def _entry_points():
    yield pytest.param([sys.executable, "-m", "rlprune"], id="python -m rlprune")
    script = shutil.which("rlprune")
    yield pytest.param([script] if script else None, id="rlprune")


@pytest.mark.parametrize("entry", _entry_points())
def test_subprocess_bad_model_exits_2_without_traceback(entry, tmp_path):
    if entry is None:
        pytest.skip("the rlprune console script is not on PATH")
    proc = subprocess.run([*entry, "inspect", "--model", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert_empty(tmp_path)


@pytest.mark.parametrize("flag", [["--seeds", "0"], ["--first-seed", "-1"], ["--episodes", "0"]])
def test_bench_bad_counts(cli, workdir, flag):
    code, _, err = cli("bench", "--model", "lenet300", "--dataset", "digits", "--out", "b", *flag)
    assert flag[0] in assert_one_line_error(code, err)  # the refusal names the flag
    assert_empty(workdir)


@pytest.mark.parametrize("command", ["search", "bench"])
@pytest.mark.parametrize("reward", ["-err*log(flops)", "-err*log(params)"])
def test_amc_rewards_parse_as_written_in_the_design(command, reward):
    """argparse reads `-err*log(...)` as an option unless it is joined to `--reward`."""
    from rlprune.service.cli.main import _join_dash_values, build_parser

    required = ["--targets", "0.9", "--out", "b"] if command == "bench" else []
    argv = _join_dash_values([command, "--reward", reward, "--seed-policies", "", *required])
    args = build_parser().parse_args(argv)
    assert args.reward == reward
    assert args.seed_policies == ()  # an empty value is kept
