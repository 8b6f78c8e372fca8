"""Run registry: launching CLI subprocesses, status derivation, queue, cancel, restart."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import WAIT_TIMEOUT_S, wait_until

from smu_explain.errors import SMUInputError
from smu_explain.runs import _HANDLES, RunRegistry, read_jsonl

FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


def make_registry(root, mode="ok", **kw):
    """A registry whose runs are the fake CLI in ``mode`` (ok, slow, crash, stubborn)."""
    kw.setdefault("launcher", [sys.executable, FAKE_CLI])
    kw.setdefault("grace_s", 2.0)
    kw.setdefault("env", {"FAKE_CLI_MODE": mode})
    return RunRegistry(root, **kw)


def wait_for(reg, run_id, statuses, timeout=WAIT_TIMEOUT_S):
    """Poll the registry until the run has one of ``statuses`` (fails after ``timeout`` s)."""
    def reached():
        reg.poll()
        run = reg.get(run_id)
        return run if run.status in statuses else None

    try:
        return wait_until(reached, f"run {run_id} to become {sorted(statuses)}", timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; still {reg.get(run_id).status}; log: {reg.log_tail(run_id)}") from None


def wait_for_progress(run):
    """Until the fake CLI wrote its first progress line (its SIGTERM handler is installed)."""
    wait_until(lambda: read_jsonl(run.progress_path), f"the first progress line of {run.id}")


def test_run_completes_and_record_is_on_disk(tmp_path, data_dir):
    reg = make_registry(tmp_path / "runs")
    run = reg.submit(strategy="adversarial", data=data_dir, config="tiny", steps=5)
    assert run.status in ("running", "done")
    run = wait_for(reg, run.id, {"done"})
    rec = json.loads((tmp_path / "runs" / run.id / "run.json").read_text())
    for key in ("id", "pid", "pid_start", "status", "created", "params", "secret"):
        assert key in rec
    # no command line and no paths on disk: both are re-built by the registry (issue 28)
    assert not {"command", "out_dir", "progress_path", "log_path"} & set(rec)
    assert rec["status"] == "done" and rec["params"]["steps"] == 5
    cmd = reg.command_for(run)
    assert cmd[2] == "pretrain" and cmd[cmd.index("--steps") + 1] == "5"
    assert cmd[cmd.index("--progress") + 1] == str(tmp_path / "runs" / run.id / "progress.jsonl")
    steps = [r for r in reg.progress(run.id) if r.get("event") == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert "fake training started" in reg.log_tail(run.id)


def test_default_launcher_runs_the_package_cli(tmp_path):
    reg = RunRegistry(tmp_path)
    cmd = reg.build_command(strategy="random", data="d", config="tiny", steps=3,
                            out_dir=Path("o"), progress_path=Path("p.jsonl"))
    assert cmd[:4] == [sys.executable, "-m", "smu_explain.cli", "pretrain"]
    assert cmd[cmd.index("--steps") + 1] == "3" and cmd[cmd.index("--strategy") + 1] == "random"


def test_runs_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("SMU_MAX_RUNS", "3")
    reg = RunRegistry()
    assert reg.root == tmp_path / "elsewhere" and reg.root.is_dir()
    assert reg.max_concurrent == 3


def test_bad_submissions_are_refused(tmp_path, data_dir):
    reg = make_registry(tmp_path)
    with pytest.raises(SMUInputError, match="strategy"):
        reg.submit(strategy="nope", data=data_dir)
    with pytest.raises(SMUInputError, match="size"):
        reg.submit(strategy="random", data=data_dir, config="huge")
    with pytest.raises(SMUInputError, match="steps"):
        reg.submit(strategy="random", data=data_dir, steps=0)
    with pytest.raises(SMUInputError, match="not found"):
        reg.submit(strategy="random", data=tmp_path / "missing")
    assert reg.list() == []


def test_crash_is_failed_with_log_tail(tmp_path, data_dir):
    reg = make_registry(tmp_path, mode="crash")
    run = reg.submit(strategy="random", data=data_dir, steps=10)
    run = wait_for(reg, run.id, {"failed", "done", "cancelled"})
    assert run.status == "failed"
    assert run.returncode == 1
    assert "crashed" in run.message
    assert "boom at step 3" in reg.log_tail(run.id)


def test_cancel_sends_sigterm_and_run_reports_cancelled(tmp_path, data_dir):
    # a long grace period: on a loaded machine the process may take a while to handle SIGTERM;
    # "not killed" proves it stopped on SIGTERM within the grace period, without a stopwatch
    reg = make_registry(tmp_path, mode="slow", grace_s=60.0)
    run = reg.submit(strategy="random", data=data_dir, steps=500)
    wait_for_progress(run)
    run = reg.cancel(run.id)
    assert run.status == "cancelled"
    assert not run.killed  # it obeyed SIGTERM
    assert read_jsonl(run.progress_path)[-1]["status"] == "cancelled"


def test_cancel_escalates_to_sigkill(tmp_path, data_dir):
    reg = make_registry(tmp_path, mode="stubborn", grace_s=0.5)
    run = reg.submit(strategy="random", data=data_dir, steps=500)
    wait_for_progress(run)  # the fake CLI has installed its (stubborn) SIGTERM handler
    run = reg.cancel(run.id)
    assert run.status == "cancelled"
    assert run.killed
    assert run.returncode == -signal.SIGKILL


def test_non_blocking_cancel_escalates_on_poll(tmp_path, data_dir):
    reg = make_registry(tmp_path, mode="stubborn", grace_s=0.3)
    run = reg.submit(strategy="random", data=data_dir, steps=500)
    wait_for_progress(run)
    run = reg.cancel(run.id, wait=False)
    assert run.status == "running" and run.cancel_requested is not None
    run = wait_for(reg, run.id, {"cancelled"})
    assert run.killed


def test_queue_respects_max_concurrent(tmp_path, data_dir):
    reg = make_registry(tmp_path, mode="slow", max_concurrent=1)
    a = reg.submit(strategy="random", data=data_dir, steps=500)
    b = reg.submit(strategy="adversarial", data=data_dir, steps=3)
    assert reg.get(a.id).status == "running"
    assert reg.get(b.id).status == "queued"
    assert [r.id for r in reg.queue()] == [b.id]
    reg.poll()
    assert reg.get(b.id).status == "queued"  # still no free slot
    reg.cancel(a.id)
    reg.poll()  # the slot is free: b starts
    assert reg.get(b.id).status in ("running", "done")
    wait_for(reg, b.id, {"done"})
    assert reg.queue() == []


def test_cancel_queued_run(tmp_path, data_dir):
    reg = make_registry(tmp_path, mode="slow", max_concurrent=1)
    a = reg.submit(strategy="random", data=data_dir, steps=500)
    b = reg.submit(strategy="random", data=data_dir, steps=3)
    assert reg.cancel(b.id).status == "cancelled"
    reg.cancel(a.id)
    reg.poll()
    assert reg.get(b.id).status == "cancelled"
    assert reg.get(b.id).pid is None  # never started


def test_registry_survives_restart(tmp_path, data_dir):
    """A new registry (an app restart: no Popen handles) still follows and cancels the run."""
    reg = make_registry(tmp_path, mode="slow")
    run = reg.submit(strategy="random", data=data_dir, steps=500)
    handle = _HANDLES.pop(reg._key(run))  # forget the handle, as a restarted app would
    try:
        reg2 = make_registry(tmp_path)
        assert reg2.get(run.id).status == "running"
        assert [r.id for r in reg2.list()] == [run.id]
        reg2.cancel(run.id, wait=False)
        handle.wait(timeout=WAIT_TIMEOUT_S)  # reap it as init would for a restarted app
        run2 = wait_for(reg2, run.id, {"cancelled"})
        assert run2.status == "cancelled"
    finally:
        if handle.poll() is None:
            handle.kill()
            handle.wait()


def _record(root, run_id, **kw):
    """Write a run.json by hand (as an older app, a crash or a stranger would leave it)."""
    d = root / run_id
    d.mkdir()
    rec = {"id": run_id, "status": "running", "created": "2020-01-01T00:00:00+00:00",
           "params": {"strategy": "random", "data": str(root), "config": "tiny", "steps": 5},
           "secret": "0" * 32, **kw}
    (d / "run.json").write_text(json.dumps(rec))
    return d


def test_dead_pid_without_status_line_is_failed(tmp_path):
    """A record whose process is gone (e.g. the machine rebooted) is a crash, not 'running'."""
    reg = make_registry(tmp_path)
    d = _record(tmp_path, "old-run", pid=2 ** 22 + 12345, pid_start=1)
    (d / "progress.jsonl").write_text(json.dumps({"event": "step", "step": 1, "loss": 1.0}) + "\n")
    assert reg.get("old-run").status == "failed"
    # and a finished one is read from its final status line
    (d / "progress.jsonl").write_text(json.dumps({"event": "status", "status": "done", "step": 1}) + "\n{\"torn")
    rec = json.loads((d / "run.json").read_text())
    rec["status"] = "running"
    (d / "run.json").write_text(json.dumps(rec))
    assert reg.get("old-run").status == "done"


def test_recycled_pid_is_not_our_run(tmp_path):
    reg = make_registry(tmp_path)
    # our own pid is alive, but with another start time it is not the run's process
    _record(tmp_path, "r", pid=os.getpid(), pid_start=1)
    assert reg.get("r").status == "failed"


def test_model_dirs_lists_finished_runs_with_weights(tmp_path, data_dir):
    reg = make_registry(tmp_path)
    run = reg.submit(strategy="random", data=data_dir, steps=2)
    wait_for(reg, run.id, {"done"})
    assert reg.model_dirs() == []  # the fake CLI writes no weights
    out = Path(run.out_dir)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x")
    [(label, path)] = reg.model_dirs()
    assert path == out and run.id in label and "done" in label


def test_unknown_run(tmp_path):
    reg = make_registry(tmp_path)
    with pytest.raises(SMUInputError, match="no such run"):
        reg.get("nope")


@pytest.mark.slow
def test_real_cli_run_finishes_and_cancels(tmp_path):
    """The registry against the real `python -m smu_explain.cli pretrain` on sample_midi."""
    pytest.importorskip("smu_explain.cli")
    root = Path(__file__).resolve().parents[1]
    reg = RunRegistry(tmp_path / "runs", grace_s=10.0, env={"OMP_NUM_THREADS": "1"})
    run = reg.submit(strategy="adversarial", data=root / "sample_midi", config="tiny", steps=3,
                     log_every=1, no_bar=True, no_cache=True)
    run = wait_for(reg, run.id, {"done", "failed", "cancelled"}, timeout=300)
    assert run.status == "done", reg.log_tail(run.id)
    assert [r["step"] for r in reg.progress(run.id) if r.get("event") == "step"] == [1, 2, 3]
    [(label, out)] = reg.model_dirs()
    assert out == Path(run.out_dir) and run.id in label
    long = reg.submit(strategy="random", data=root / "sample_midi", config="tiny", steps=100_000,
                      log_every=1, no_bar=True, no_cache=True)
    wait_until(lambda: any(r.get("event") == "step" for r in reg.progress(long.id)),
               f"the first step of {long.id}", timeout=300, interval=0.2)
    long = reg.cancel(long.id)
    assert long.status == "cancelled", reg.log_tail(long.id)
    assert not long.killed  # the CLI stops cleanly on SIGTERM
    assert read_jsonl(long.progress_path)[-1]["status"] == "cancelled"
