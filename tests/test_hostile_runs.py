"""Hostile run records (issue 28, item 1): the run registry treats its files as data.

Every case plants a record (or a link) under a runs folder, as a stranger with write access
to that folder or a careless user would, and checks that nothing runs from it, no process
the registry did not start is signalled, nothing is read or written outside the run's own
folder, and a malformed record is skipped and reported, never an exception.

Signal tests start their own child (``sleep``) in its own process group and only ever
signal that child themselves; the registry's ``os.kill`` / ``os.killpg`` are watched.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until
from streamlit.testing.v1 import AppTest

from smu_explain import runs as R
from smu_explain.errors import SMUInputError
from smu_explain.runs import RunRegistry, max_runs_from_env

ROOT = Path(__file__).resolve().parents[1]
FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))
PARAMS = {"strategy": "random", "config": "tiny", "steps": 3}


def make_registry(root, **kw):
    kw.setdefault("launcher", [sys.executable, FAKE_CLI])
    kw.setdefault("grace_s", 0.3)
    return RunRegistry(root, **kw)


def plant(root: Path, run_id: str, record, raw: bytes | None = None) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_bytes(raw if raw is not None else json.dumps(record).encode())
    return d


def record(run_id: str, data: Path, **kw) -> dict:
    rec = {"id": run_id, "status": "queued", "created": "2020-01-01T00:00:00+00:00",
           "params": {**PARAMS, "data": str(data)}, "secret": "ab" * 16}
    rec.update(kw)
    return rec


@pytest.fixture
def watched_signals(monkeypatch):
    """Every (function, pid, signal) the registry sends."""
    sent = []
    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid, sig):
        sent.append(("kill", pid, sig))
        return real_kill(pid, sig)

    def killpg(pid, sig):
        sent.append(("killpg", pid, sig))
        return real_killpg(pid, sig)

    monkeypatch.setattr(R.os, "kill", kill)
    monkeypatch.setattr(R.os, "killpg", killpg)
    return sent


@pytest.fixture
def own_child():
    """A ``sleep`` this test starts in its own process group; killed by the test at the end."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ----------------------------------------------------------------------------- nothing runs from a file

@pytest.mark.parametrize("params_ok", [True, False])
def test_a_queued_record_command_is_never_executed(tmp_path, params_ok):
    sentinel = tmp_path / "pwned"
    cmd = [sys.executable, "-c", f"open({str(sentinel)!r}, 'w').write('x')"]
    rec = record("q1", tmp_path, command=cmd, launcher=cmd, env={"LD_PRELOAD": "/x.so"})
    if not params_ok:
        rec["params"] = {"extra_args": cmd}
    root = tmp_path / "runs"
    plant(root, "q1", rec)
    reg = make_registry(root)
    runs = reg.poll()
    if params_ok:  # well-formed, but not queued by this registry (unsigned): never started
        [run] = runs
        assert run.status == "failed" and "not written by this registry" in run.message
        assert not (root / "q1" / "log.txt").exists() and run.pid is None
    else:
        assert runs == [] and [name for name, _ in reg.skipped()] == ["q1"]
    assert not sentinel.exists()


def test_only_records_this_registry_signed_are_started(tmp_path):
    """submit signs the record with the runs folder's private key; a record edited after the
    submit, signed with another key, or read with a key file others can read, is not started."""
    root = tmp_path / "runs"
    reg = make_registry(root)
    other = tmp_path / "other"
    other.mkdir()
    key = root / ".key"

    def queued() -> str:
        return reg.submit(strategy="random", data=tmp_path, config="tiny", steps=3, start=False).id

    def started(run_id: str) -> bool:
        reg.poll()
        return reg.get(run_id).status != "failed" or "not written by this registry" not in reg.get(run_id).message

    edited = queued()
    rec = json.loads((root / edited / "run.json").read_text())
    assert len(rec["sig"]) == 64 and stat.S_IMODE(key.stat().st_mode) == 0o600
    rec["params"]["data"] = str(other)  # the same record, another folder to train on
    (root / edited / "run.json").write_text(json.dumps(rec))
    assert not started(edited)
    good = queued()
    os.chmod(key, 0o644)  # a key others may read: nothing signed with it is trusted, nothing new is signed
    assert not started(good)
    with pytest.raises(SMUInputError, match="not a private file"):
        queued()
    os.chmod(key, 0o600)
    again = queued()
    key.write_text("ab" * 32)  # another key: the signatures made with the old one no longer hold
    assert not started(again)
    key.unlink()
    fresh = queued()  # a new key is made on the next submit
    wait_until(lambda: reg.poll() and reg.get(fresh).status in ("done", "failed"), "the signed run to end")
    assert reg.get(fresh).status == "done"


@pytest.mark.parametrize("bad", [
    {"strategy": "random; rm -rf /"}, {"config": "../../x"}, {"steps": "5"}, {"steps": True},
    {"steps": 10 ** 30}, {"data": "relative/dir"}, {"data": "-–help"}, {"log_every": -1},
    {"no_bar": "yes"}, {"extra_flag": "--resume"},
])
def test_bad_parameters_are_skipped_not_run(tmp_path, bad):
    root = tmp_path / "runs"
    rec = record("p1", tmp_path)
    rec["params"].update(bad)
    plant(root, "p1", rec)
    reg = make_registry(root)
    assert reg.poll() == []
    [(name, reason)] = reg.skipped()
    assert name == "p1" and reason
    assert not (root / "p1" / "log.txt").exists()  # never started


# ----------------------------------------------------------------------------- signals only to proven children

@pytest.mark.parametrize("pid_start", [None, "real", 12345])
def test_a_foreign_pid_is_never_signalled(tmp_path, own_child, watched_signals, pid_start):
    """The record names a live process the registry did not start (this test's own child,
    in its own group): with no start time, the right start time, or a wrong one, it lacks the
    run's marker, so Cancel and the grace-period escalation send it nothing."""
    start = R.proc_start_time(own_child.pid) if pid_start == "real" else pid_start
    root = tmp_path / "runs"
    plant(root, "r1", record("r1", tmp_path, status="running", pid=own_child.pid, pid_start=start,
                             cancel_requested=1.0))
    reg = make_registry(root)
    reg.cancel("r1", grace_s=0.2)
    reg.poll()
    assert reg.get("r1").status in ("cancelled", "failed")
    assert watched_signals == []
    assert own_child.poll() is None  # still alive: nothing reached it


@pytest.mark.parametrize("pid", [1, os.getpid(), os.getppid()])
def test_pid_one_and_the_app_itself_are_never_signalled(tmp_path, watched_signals, pid):
    root = tmp_path / "runs"
    plant(root, "r1", record("r1", tmp_path, status="running", pid=pid,
                             pid_start=R.proc_start_time(pid)))
    reg = make_registry(root)
    reg.cancel("r1", grace_s=0.1)
    assert watched_signals == []


def test_the_marker_of_another_run_does_not_prove_ownership(tmp_path, watched_signals):
    """A record copying a live run's pid, start time and secret under another id is not that run."""
    root = tmp_path / "runs"
    reg = make_registry(root, env={"FAKE_CLI_MODE": "slow"}, grace_s=30.0)
    run = reg.submit(strategy="random", data=tmp_path, steps=500)
    try:
        wait_until(lambda: reg.progress(run.id), "the first progress line")
        real = json.loads((root / run.id / "run.json").read_text())
        plant(root, "copy", {**real, "id": "copy"})
        reg2 = make_registry(root)  # no Popen handles: proof by /proc only
        reg2.cancel("copy", grace_s=0.1)
        assert watched_signals == []
        assert reg.get(run.id).status == "running"
        # the real run is proven and cancellable by a fresh registry (an app restart)
        assert reg2.cancel(run.id, grace_s=30.0).status == "cancelled"
        assert any(s[0] == "killpg" for s in watched_signals)
    finally:
        reg.cancel(run.id, grace_s=5.0)


# ----------------------------------------------------------------------------- paths stay in the run's folder

def test_paths_in_a_record_are_ignored(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP SECRET\n")
    root = tmp_path / "runs"
    plant(root, "r1", record("r1", tmp_path, status="failed", log_path=str(outside),
                             progress_path=str(outside), out_dir=str(ROOT / "models" / "demo-random")))
    reg = make_registry(root)
    [run] = reg.list()
    assert Path(run.log_path) == root / "r1" / "log.txt"
    assert Path(run.out_dir) == root / "r1" / "out"
    assert reg.log_tail("r1") == "" and reg.progress("r1") == [] and reg.model_dirs() == []


def test_links_out_of_the_run_folder_are_not_followed(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text(json.dumps({"event": "status", "status": "done"}) + "\nTOP SECRET\n")
    models = tmp_path / "elsewhere"
    (models / "m").mkdir(parents=True)
    (models / "m" / "config.json").write_text("{}")
    (models / "m" / "model.safetensors").write_bytes(b"x")
    root = tmp_path / "runs"
    d = plant(root, "r1", record("r1", tmp_path, status="failed"))
    (d / "log.txt").symlink_to(outside)
    (d / "progress.jsonl").symlink_to(outside)
    (d / "out").symlink_to(models / "m")
    reg = make_registry(root)
    assert reg.log_tail("r1") == "" and reg.progress("r1") == []
    assert reg.model_dirs() == []


def test_a_queued_run_with_a_planted_log_link_is_not_started(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    root = tmp_path / "runs"
    reg = make_registry(root)
    queued = reg.submit(strategy="random", data=tmp_path, config="tiny", steps=3, start=False)  # signed
    (root / queued.id / "log.txt").symlink_to(target)
    [run] = reg.poll()
    assert run.status == "failed" and "link" in run.message
    assert target.read_text() == "keep me\n"


def test_a_symlinked_run_json_is_skipped_and_never_written_through(tmp_path):
    target = tmp_path / "victim.json"
    target.write_text(json.dumps(record("r1", tmp_path)))
    root = tmp_path / "runs"
    (root / "r1").mkdir(parents=True)
    (root / "r1" / "run.json").symlink_to(target)
    (root / "linked").symlink_to(tmp_path)  # a run folder that is a link out of the root
    reg = make_registry(root)
    assert reg.poll() == []
    assert [n for n, _ in reg.skipped()] == ["r1"]
    assert json.loads(target.read_text())["status"] == "queued"


@pytest.mark.parametrize("run_id", ["..", "../..", "/etc", "a/b", "", ".lock", "x" * 300, "a\0b", 5, None])
def test_run_ids_are_validated(tmp_path, run_id):
    reg = make_registry(tmp_path / "runs")
    with pytest.raises(SMUInputError, match="no such run"):
        reg.get(run_id)
    with pytest.raises(SMUInputError, match="no such run"):
        reg.cancel(run_id)
    with pytest.raises(SMUInputError, match="no such run"):
        reg.log_tail(run_id)


# ----------------------------------------------------------------------------- malformed records

MALFORMED = {
    "list": b"[1, 2, 3]",
    "string": b'"queued"',
    "pid-text": None,  # filled below
    "created-int": None,
    "status-unknown": None,
    "id-mismatch": None,
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "huge-int": b'{"id": "huge-int", "pid": ' + b"9" * 5000 + b"}",
    "not-utf8": b"\xff\xfe\x00{",
    "empty": b"",
    "oversize": b'{"id": "oversize", "message": "' + b"x" * (R.MAX_RECORD_BYTES + 10) + b'"}',
    "nan-cancel": None,
}


def _malformed(name: str, data: Path) -> bytes:
    if MALFORMED[name] is not None:
        return MALFORMED[name]
    rec = record(name, data, status="running")
    if name == "pid-text":
        rec["pid"] = "abc"
    elif name == "created-int":
        rec["created"] = 5
    elif name == "status-unknown":
        rec["status"] = "exploding"
    elif name == "id-mismatch":
        rec["id"] = "../../etc"
    elif name == "nan-cancel":
        return json.dumps(rec)[:-1].encode() + b', "cancel_requested": NaN}'
    return json.dumps(rec).encode()


def test_malformed_records_are_skipped_and_reported(tmp_path):
    root = tmp_path / "runs"
    for name in MALFORMED:
        plant(root, name, None, raw=_malformed(name, tmp_path))
    good = plant(root, "good", record("good", tmp_path, status="done"))
    reg = make_registry(root)
    for call in (reg.list, reg.poll, reg.queue, reg.model_dirs):
        call()  # none raises
    assert [r.id for r in reg.list()] == [good.name]
    skipped = dict(reg.skipped())
    assert set(skipped) == set(MALFORMED)
    assert all(isinstance(reason, str) and reason for reason in skipped.values())
    for name in MALFORMED:
        with pytest.raises(SMUInputError):
            reg.get(name)


def test_train_page_reports_skipped_records_without_an_exception(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    plant(root, "broken", None, raw=b"[1]")
    plant(root, "evil", record("evil", tmp_path, status="running", pid=1, pid_start=None))
    monkeypatch.setenv("SMU_RUNS_DIR", str(root))
    monkeypatch.setenv("SMU_CLI", f"{sys.executable} {FAKE_CLI}")
    at = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=60).run()
    assert not at.exception
    assert any("skipped" in w.value for w in at.warning)


# ----------------------------------------------------------------------------- environment

def test_runs_dir_naming_a_file_is_a_typed_error(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SMUInputError, match="names a file"):
        RunRegistry(f)
    with pytest.raises(SMUInputError):
        RunRegistry(f / "below")
    monkeypatch.setenv("SMU_RUNS_DIR", str(f))
    at = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=60).run()
    assert not at.exception
    assert any("cannot be opened" in e.value for e in at.error)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1e3", "99999999999", "2 ; rm"])
def test_bad_max_runs_is_a_typed_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("SMU_MAX_RUNS", value)
    with pytest.raises(SMUInputError, match="SMU_MAX_RUNS"):
        max_runs_from_env()
    with pytest.raises(SMUInputError, match="SMU_MAX_RUNS"):
        RunRegistry(tmp_path)
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=60).run()
    assert not at.exception
    assert any("SMU_MAX_RUNS" in e.value.replace("\\", "") for e in at.error)


@pytest.mark.parametrize("folder", ["~nosuchuser_smu/m", "x" * 5000, "a\0b", "/proc/self/fd/0/x"])
def test_bad_training_folders_are_typed_errors(tmp_path, folder):
    reg = make_registry(tmp_path / "runs")
    with pytest.raises(SMUInputError):
        reg.submit(strategy="random", data=folder, steps=3)
    assert reg.list() == [] and reg.skipped() == []


# ----------------------------------------------------------------------------- served beyond localhost (issue 24)

@pytest.mark.parametrize("address,env,allowed", [
    ("localhost", None, True), ("127.0.0.1", None, True), ("::1", None, True), ("[::1]", None, True),
    ("0.0.0.0", None, False), ("", None, False), ("192.168.1.5", None, False), ("::", None, False),
    ("0.0.0.0", "1", True), ("localhost", "0", False), ("0.0.0.0", "maybe", False),
])
def test_training_is_off_beyond_localhost_unless_allowed(monkeypatch, address, env, allowed):
    if env is None:
        monkeypatch.delenv("SMU_ALLOW_TRAIN", raising=False)
    else:
        monkeypatch.setenv("SMU_ALLOW_TRAIN", env)
    ok, why = R.training_allowed(address)
    assert ok is allowed and (why == "") is allowed


def test_train_page_is_off_when_served_to_the_network(tmp_path, monkeypatch):
    from streamlit import config

    monkeypatch.delenv("SMU_ALLOW_TRAIN", raising=False)
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=60).run()
    finally:
        config.set_option("server.address", old)
    assert not at.exception
    assert any("SMU_ALLOW_TRAIN=1" in i.value.replace("\\", "") for i in at.info)
    assert not at.button  # no form: nothing can be started
    assert not (tmp_path / "runs").exists()


def test_the_queue_is_capped(tmp_path):
    reg = make_registry(tmp_path / "runs", env={"FAKE_CLI_MODE": "slow"}, max_concurrent=1, max_queued=2,
                        grace_s=5.0)
    first = reg.submit(strategy="random", data=tmp_path, steps=500)
    try:
        reg.submit(strategy="random", data=tmp_path, steps=3)
        reg.submit(strategy="random", data=tmp_path, steps=3)
        with pytest.raises(SMUInputError, match="queue is full"):
            reg.submit(strategy="random", data=tmp_path, steps=3)
        assert len(reg.queue()) == 2
    finally:
        for r in reg.list():
            reg.cancel(r.id)
    assert reg.get(first.id).status == "cancelled"


def test_served_to_the_network_no_queued_run_starts_on_a_page_load(tmp_path, monkeypatch):
    """app.py polls the registry on every page load (queued runs start when a slot frees); served
    beyond localhost without SMU_ALLOW_TRAIN, a queued record stays queued: nothing is started."""
    from streamlit import config

    root = tmp_path / "runs"
    plant(root, "q1", record("q1", tmp_path))
    monkeypatch.delenv("SMU_ALLOW_TRAIN", raising=False)
    monkeypatch.setenv("SMU_RUNS_DIR", str(root))
    monkeypatch.setenv("SMU_CLI", f"{sys.executable} {FAKE_CLI}")
    monkeypatch.setenv("SMU_NO_WARMUP", "1")
    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    finally:
        config.set_option("server.address", old)
    assert not at.exception
    assert json.loads((root / "q1" / "run.json").read_text())["status"] == "queued"
    assert not (root / "q1" / "log.txt").exists()
