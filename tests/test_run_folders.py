"""The job layer (service/jobs.py, service/checkpoint_store.py): run folders, the run lock,
status, checkpoint pointers; and the lifecycle of in-process `rlprune search` / `resume` calls."""

from __future__ import annotations

import json
import os

import pytest
from support import (
    MODEL_MODULE,
    TINY_PRUNABLE,
    copy_run,
    episodes_done,
    get_assets,
    get_fleet,
    one_torch_thread,
    read_json,
    run_main,
)

from rlprune.models.errors import UserError
from rlprune.service.jobs.checkpoint_store import CheckpointStore
from rlprune.service.jobs.files import write_json
from rlprune.service.jobs.run_folder import Job, list_jobs


@pytest.fixture
def jobs():
    """Jobs a test created; their locks are released afterwards."""
    made: list[Job] = []
    yield made
    for job in made:
        job.release()


def test_create_default_folder_under_runs(workdir, jobs):
    job = Job.create(None, "m-d-0.5-20260101-000000")
    jobs.append(job)
    assert job.path.resolve() == (workdir / "runs" / "m-d-0.5-20260101-000000").resolve()
    assert (job.path / "checkpoints").is_dir()
    assert job.is_running()
    twin = Job.create(None, "m-d-0.5-20260101-000000")  # same second, same settings
    jobs.append(twin)
    assert twin.path != job.path and twin.path.parent == job.path.parent


def test_create_refuses_a_folder_with_files_and_takes_an_empty_one(workdir, jobs):
    (workdir / "full").mkdir()
    (workdir / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        Job.create(workdir / "full", "id")
    assert sorted(p.name for p in (workdir / "full").iterdir()) == ["x"]
    (workdir / "empty").mkdir()
    jobs.append(Job.create(workdir / "empty", "id"))
    jobs.append(Job.create(workdir / "new" / "nested", "id"))
    assert (workdir / "new" / "nested" / "checkpoints").is_dir()


def test_create_refuses_a_folder_another_job_is_creating(workdir, jobs):
    """Only a stale .lock in the folder, but someone holds it: refused."""
    run = workdir / "contested"
    run.mkdir()
    other = Job(run)
    other.acquire()  # as if another process had just taken it
    jobs.append(other)
    with pytest.raises(UserError):
        Job.create(run, "id")
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_lock_decides_running(workdir, jobs):
    run = workdir / "r"
    job = Job.create(run, "id")
    write_json(run / "config.json", {"model": "m"})
    job.write_status("running", episodes_done=3)
    seen_from_elsewhere = Job.open(run)
    assert seen_from_elsewhere.is_running()
    assert seen_from_elsewhere.status()["state"] == "running"
    with pytest.raises(UserError, match="already running"):
        seen_from_elsewhere.acquire()
    job.release()
    assert not seen_from_elsewhere.is_running()
    status = seen_from_elsewhere.status()
    assert status["state"] == "interrupted"  # the job died without saying so
    assert status["episodes_done"] == 3
    assert read_json(run / "status.json")["state"] == "running"  # status() only reads
    job.write_status("finished")
    assert Job.open(run).status()["state"] == "finished"


def test_status_without_status_file_is_interrupted(workdir):
    run = workdir / "r"
    run.mkdir()
    write_json(run / "config.json", {})
    assert Job.open(run).status()["state"] == "interrupted"


def test_write_status_fields_and_no_temp_files(workdir, jobs):
    job = Job.create(workdir / "r", "id")
    jobs.append(job)
    job.write_status("running", episodes_done=1, best_reward=0.5)
    status = read_json(job.path / "status.json")
    assert status["pid"] == os.getpid()
    assert {"state", "heartbeat", "episodes_done", "best_reward"} <= set(status)
    assert sorted(p.name for p in job.path.iterdir()) == [".lock", "checkpoints",
                                                          "status.json"]
    with pytest.raises((AssertionError, ValueError)):
        job.write_status("exploded")


def test_open_by_name_under_runs_and_list(workdir):
    for name, config in (("b", True), ("a", True), ("junk", False)):
        (workdir / "runs" / name).mkdir(parents=True)
        if config:
            write_json(workdir / "runs" / name / "config.json", {})
    assert Job.open("a").path.name == "a"
    assert [j.path.name for j in list_jobs()] == ["a", "b"]
    with pytest.raises(UserError, match="no run"):
        Job.open("junk")


def test_latest_checkpoint_pointer(workdir):
    folder = workdir / "checkpoints"
    folder.mkdir()
    store = CheckpointStore(folder)
    assert store.latest() is None
    (folder / "latest").write_text("ep000003\n")
    assert store.latest() is None  # points at nothing yet
    (folder / "ep000003").mkdir()
    (folder / "ep000003" / "state.pt").write_bytes(b"")
    assert store.latest() == folder / "ep000003"


# -- in-process commands ------------------------------------------------------------------
@pytest.fixture
def inprocess(tmp_path_factory, workdir, monkeypatch):
    assets = get_assets(tmp_path_factory)
    monkeypatch.syspath_prepend(str(assets.models))
    with one_torch_thread():
        yield assets


def test_search_without_run_dir_makes_a_folder_under_runs(inprocess, capsys, workdir):
    code, out, err = run_main(capsys, "search", "--model", f"{MODEL_MODULE}:make",
                              "--dataset", "digits", "--checkpoint", str(inprocess.dense),
                              "--target", "0.5", "--fc-k", "1", "--episodes", "2",
                              "--warmup", "1", "--finetune-epochs", "0", "--quiet",
                              "--select-top-k", "0", "--no-int8-size")
    assert code == 0, err
    runs = list((workdir / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert run.name.startswith(MODEL_MODULE) and "digits" in run.name and "0.5" in run.name
    assert read_json(run / "status.json")["state"] == "finished"
    assert read_json(run / "policy.json")["search"]["episodes"] == 2
    config = read_json(run / "config.json")
    assert os.path.isabs(config["weights"])  # resume finds the weights from anywhere
    assert sorted(p.name for p in workdir.iterdir()) == ["runs"]


def test_in_process_resume_releases_the_run_lock(tmp_path_factory, inprocess, capsys, workdir):
    fleet = get_fleet(tmp_path_factory)
    run = copy_run(fleet.copies / "c", workdir / "c")  # stopped by SIGTERM, checkpointed
    done = episodes_done(run)
    code, _, err = run_main(capsys, "resume", str(run), "--episodes", str(done), "--quiet")
    if code != 0:
        raise RuntimeError(f"resume failed: {err}")  # not the bug this test is about
    if json.loads((run / "status.json").read_text())["state"] != "finished":
        raise RuntimeError("resume did not finish")
    assert not Job.open(run).is_running()


def test_search_seeded_with_the_uniform_policy_plays_it_first(inprocess, capsys, workdir):
    import torch

    code, _, err = run_main(capsys, "search", "--model", f"{MODEL_MODULE}:make",
                            "--dataset", "digits", "--checkpoint", str(inprocess.dense),
                            "--target", "0.5", "--fc-k", "1", "--episodes", "1",
                            "--warmup", "1", "--seed-policies", "uniform",
                            "--finetune-epochs", "0", "--quiet", "--run-dir", "r",
                            "--select-top-k", "0", "--no-int8-size")
    assert code == 0, err
    policy = read_json(workdir / "r" / "policy.json")
    assert policy["search"]["best_episode"] == 1
    f1 = torch.load(inprocess.dense, weights_only=True)["state_dict"]["f1.weight"].double()
    fc_pruned = int(((f1 - f1.mean()).abs() < f1.std(unbiased=False)).sum())
    agent = {la["name"]: la for la in policy["layers"] if la["owner"] == "agent"}
    agent_total = sum(la["params"] for la in agent.values())
    agent_goal = round(0.5 * TINY_PRUNABLE) - fc_pruned
    for layer in agent.values():
        count = layer["sparsity"] * layer["params"]
        assert abs(count - agent_goal * layer["params"] / agent_total) <= 2, layer


def _tiny_search(inprocess, capsys, *extra: str) -> tuple[int, str, str]:
    return run_main(capsys, "search", "--model", f"{MODEL_MODULE}:make", "--dataset", "digits",
                    "--checkpoint", str(inprocess.dense), "--target", "0.5", "--fc-k", "1",
                    "--warmup", "1", "--finetune-epochs", "0", "--quiet", "--run-dir", "r",
                    "--select-top-k", "0", "--no-int8-size", *extra)


@pytest.mark.parametrize("where", ["before the first episode", "during the fine-tune"])
def test_ctrl_c_outside_the_episodes_leaves_an_interrupted_run_that_resumes(
        inprocess, capsys, workdir, monkeypatch, where):
    """^C while the agent is being set up or the best policy fine-tuned reaches no episode
    boundary; the run must still read `interrupted` (not `failed`) and resume to the end."""
    from rlprune.agent.search import Search
    from rlprune.service.jobs.lifecycle import JobRunner

    def ctrl_c(self, *args, **kwargs):
        raise KeyboardInterrupt

    owner, patched = ((Search, "demonstrations") if where == "before the first episode" else
                      (JobRunner, "_finalize"))
    with monkeypatch.context() as m:
        m.setattr(owner, patched, ctrl_c)
        code, _, err = _tiny_search(inprocess, capsys, "--episodes", "2",
                                    "--checkpoint-every", "1")
    assert code == 130
    run = workdir / "r"
    status = read_json(run / "status.json")
    assert status["state"] == "interrupted"
    assert err.strip().splitlines()[-1].endswith("continue with: rlprune resume r")
    if where == "before the first episode":
        assert status["episodes_done"] == 0 and "no checkpoint yet" in err
    else:
        assert status["episodes_done"] == 2 and "(the last checkpoint" not in err
    assert not Job.open(run).is_running()
    code, _, err = run_main(capsys, "resume", str(run), "--quiet")
    assert code == 0, err
    assert read_json(run / "status.json")["state"] == "finished"
    assert read_json(run / "policy.json")["search"]["episodes"] == 2


def _tiny_baseline(inprocess, capsys, run_dir: str) -> tuple[int, str, str]:
    return run_main(capsys, "baseline", "--method", "lamp", "--model", f"{MODEL_MODULE}:make",
                    "--dataset", "digits", "--checkpoint", str(inprocess.dense),
                    "--target", "0.5", "--fc-k", "1", "--finetune-epochs", "1",
                    "--run-dir", run_dir)


def test_baseline_job_writes_a_finished_run(inprocess, capsys, workdir):
    code, out, err = _tiny_baseline(inprocess, capsys, "runs/b")
    assert code == 0, err
    run = workdir / "runs" / "b"
    assert out.startswith("run runs/b (lamp)")
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status["method"] == "lamp"
    assert abs(status["achieved_sparsity"] - 0.5) < 1e-3
    policy = read_json(run / "policy.json")
    assert policy["method"] == "lamp" and "episodes" not in policy["search"]
    assert (run / "pruned.rlprune").is_file() and (run / "report.md").is_file()
    assert not Job.open(run).is_running()
    code, out, err = run_main(capsys, "list")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["b", "finished", "lamp", "0.5000"]


def test_interrupted_baseline_resumes_as_the_same_baseline(inprocess, capsys, workdir,
                                                           monkeypatch):
    """A baseline stopped by ^C (or killed: `running` with no lock reads `interrupted`) is run
    again by `rlprune resume` -- as the baseline, not as a search in its folder."""

    import rlprune.service.jobs.lifecycle

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # ^C while the baseline prunes and fine-tunes
        m.setattr(rlprune.service.jobs.lifecycle, "prune_and_finetune", ctrl_c)
        code, _, err = _tiny_baseline(inprocess, capsys, "b")
    assert code == 130 and err.strip().endswith("rlprune resume b")
    run = workdir / "b"
    assert read_json(run / "status.json")["state"] == "interrupted"
    code, _, err = run_main(capsys, "resume", "b", "--episodes", "3")
    assert code == 2 and "is a baseline (lamp)" in err
    code, out, err = run_main(capsys, "resume", "b")
    assert code == 0, err
    assert read_json(run / "status.json")["state"] == "finished"
    assert not any((run / "checkpoints").glob("*")), "resume ran a search"
    code, _, err = _tiny_baseline(inprocess, capsys, "fresh")
    assert code == 0, err
    resumed, fresh = read_json(run / "policy.json"), read_json(workdir / "fresh" / "policy.json")
    assert resumed["layers"] == fresh["layers"]
    assert resumed["accuracy"] == fresh["accuracy"]


def layout(run) -> set[str]:
    """A run folder's files, relative; TensorBoard's event files (named by time and pid) as
    one entry."""
    paths = set()
    for path in run.rglob("*"):
        rel = path.relative_to(run).as_posix()
        paths.add("tb/<events>" if rel.startswith("tb/") and path.is_file() else rel)
    return {p for p in paths if not (p.startswith("tb/") and p != "tb/<events>")}


def test_search_baseline_and_bench_cells_leave_the_same_run_folders(inprocess, capsys,
                                                                    workdir):
    """One lifecycle: a bench cell's folder is the folder its command makes, file for file;
    a baseline's is a search's without the search's own parts (checkpoint, curve, tb)."""
    common = ("--model", f"{MODEL_MODULE}:make", "--dataset", "digits", "--weights",
              str(inprocess.dense), "--fc-k", "1", "--finetune-epochs", "1")
    searched = ("--episodes", "3", "--warmup", "1")
    # a bench cell skips the int8 file (its size is not part of a bench): so do these
    code, _, err = run_main(capsys, "search", *common, *searched, "--target", "0.5", "--quiet",
                            "--checkpoint-every", "3", "--no-int8-size", "--run-dir", "search")
    assert code == 0, err
    code, _, err = run_main(capsys, "baseline", "--method", "lamp", *common, "--target", "0.5",
                            "--no-int8-size", "--run-dir", "baseline")
    assert code == 0, err
    code, _, err = run_main(capsys, "bench", *common, *searched, "--targets", "0.5",
                            "--methods", "ddpg,lamp", "--seeds", "1", "--quiet", "--out", "b")
    assert code == 0, err
    search, baseline = layout(workdir / "search"), layout(workdir / "baseline")
    assert layout(workdir / "b" / "runs" / "ddpg-0.5-seed0") == search
    assert layout(workdir / "b" / "runs" / "lamp-0.5-seed0") == baseline
    from rlprune.service.jobs.lifecycle import RUN_FILES

    assert set(RUN_FILES) | {".lock", "checkpoints"} == baseline
    own = {"rewards.png", "tb", "tb/<events>", "selection.json", "checkpoints/latest",
           "checkpoints/ep000003",
           *(f"checkpoints/ep000003/{f}" for f in ("agent.zip", "replay_buffer.pkl",
                                                    "state.pt"))}
    assert search == baseline | own
    for run in ("search", "baseline", "b/runs/ddpg-0.5-seed0", "b/runs/lamp-0.5-seed0"):
        config = read_json(workdir / run / "config.json")
        assert config["method"] in ("ddpg", "lamp") and config["target"] == 0.5
        assert read_json(workdir / run / "status.json")["state"] == "finished"


def test_the_old_checkpoint_flag_still_names_the_dense_weights(inprocess, capsys, workdir):
    code, _, err = _tiny_search(inprocess, capsys, "--episodes", "1")
    assert code == 0, err
    assert read_json(workdir / "r" / "config.json")["weights"] == str(inprocess.dense.resolve())


def test_a_new_job_reads_running_while_its_lock_is_held(workdir, jobs):
    """From the moment its folder exists, before any status is written."""
    job = Job.create(workdir / "r", "id")
    jobs.append(job)
    write_json(job.path / "config.json", {})
    assert not (job.path / "status.json").exists()
    assert Job.open(job.path).status()["state"] == "running"
    job.release()
    assert Job.open(job.path).status()["state"] == "interrupted"


def test_ctrl_c_while_pre_training_says_to_run_the_command_again(tmp_path):
    """No run folder exists yet while the dense model is pre-trained; the message says what
    to do, and nothing half-made is left (no weights file, no run)."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    # an ignored or blocked SIGINT is inherited through exec, and Python then never raises
    # KeyboardInterrupt (in the full suite the signal once had no effect): the CLI runs as a
    # shell in a terminal would start it (no preexec_fn: this process has threads)
    as_from_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "sys.argv = ['rlprune', 'search', '--model', 'lenet5']; "
        "runpy.run_module('rlprune', run_name='__main__')")
    here = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    proc = subprocess.Popen([sys.executable, "-c", as_from_a_terminal],
                            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = bytearray()

    def read() -> None:
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"pretrain:" not in seen and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the pre-training bar has started (after its first of 8 epochs)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    reader.join(10)
    assert code == 130, (here, seen.decode()[-800:])
    last = seen.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert last == ("rlprune: interrupted while loading or pre-training the dense model "
                    "(nothing was kept); run the same command again")
    leftovers = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")]
    assert leftovers in ([], ["runs"], ["runs", "runs/pretrained"]), leftovers
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob(".*tmp*"))
