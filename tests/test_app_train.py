"""Train page (AppTest): start a run through the form, see it listed, cancel it, see a crash's log."""

import json
import sys
from pathlib import Path

import pytest
from conftest import wait_until
from streamlit.testing.v1 import AppTest

from smu_explain.runs import RunRegistry

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app_pages" / "train.py")
FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))


@pytest.fixture
def env(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SMU_RUNS_DIR", str(runs))
    monkeypatch.setenv("SMU_CLI", f"{sys.executable} {FAKE_CLI}")
    monkeypatch.setenv("SMU_MAX_RUNS", "1")
    return runs


def _registry(runs, mode="ok"):
    return RunRegistry(runs, launcher=[sys.executable, FAKE_CLI], env={"FAKE_CLI_MODE": mode})


def _wait_status(reg, run_id, statuses):
    """Until the run has left 'running' for one of ``statuses`` (generous timeout)."""
    def reached():
        reg.poll()
        return reg.get(run_id).status in statuses

    wait_until(reached, f"run {run_id} to become {sorted(statuses)}")
    return reg.get(run_id)


def _texts(at):
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                    + [i.value for i in at.info] + [s.value for s in at.success])


def test_empty_registry_says_so(env):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)


def test_start_and_cancel_a_run(env, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.selectbox(key="train_strategy").set_value("adversarial")
    at.number_input(key="train_steps").set_value(5000)
    at.button[0].click().run()  # the form's "Start run"
    assert not at.exception
    assert any("Started run" in s.value for s in at.success)
    reg = _registry(env)
    [run] = reg.list()
    assert run.status == "running"
    assert run.params == {"strategy": "adversarial", "data": str(ROOT / "sample_midi"),
                          "config": "tiny", "steps": 5000, "log_every": 50, "no_bar": True}
    # progress shows up on a rerun (the fragment polls every second in the browser)
    wait_until(lambda: any(r.get("event") == "step" for r in reg.progress(run.id)), "a step of the run")
    at.run()
    assert "Status: **running**" in _texts(at)
    cancel = [b for b in at.button if b.label == "Cancel run"]
    assert cancel
    cancel[0].click().run()
    assert not at.exception
    assert _wait_status(reg, run.id, {"cancelled", "failed", "done"}).status == "cancelled"
    at.run()
    assert "Status: **cancelled**" in _texts(at)


def test_second_run_is_queued(env):
    reg = _registry(env, "slow")
    reg.submit(strategy="random", data=ROOT / "sample_midi", steps=5000)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("queued" in i.value for i in at.info)
    assert "1 queued" in _texts(at)
    for r in reg.list():
        reg.cancel(r.id)


def test_crashed_run_shows_its_log_tail(env):
    reg = _registry(env, "crash")
    run = reg.submit(strategy="random", data=ROOT / "sample_midi", steps=10)
    _wait_status(reg, run.id, {"failed", "done", "cancelled"})
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("The run failed" in e.value for e in at.error)
    assert any("boom at step 3" in c.value for c in at.code)


def test_bad_folder_is_an_error(env, tmp_path):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="train_data_choice").set_value("a folder")
    at.text_input(key="train_folder").set_value(str(tmp_path / "nowhere"))
    at.button[0].click().run()
    assert not at.exception
    assert any("not found" in e.value for e in at.error)
    assert _registry(env).list() == []


def test_finished_run_is_selectable_as_a_model(env):
    from app_helpers import make_model

    reg = _registry(env)
    run = reg.submit(strategy="random", data=ROOT / "sample_midi", steps=3)
    assert _wait_status(reg, run.id, {"done", "failed", "cancelled"}).status == "done"
    out = Path(run.out_dir)
    out.rmdir()  # the fake CLI made it empty; save a real model there
    make_model(out, seed=5)
    # Train page: "Open in Explore" sets the model for the other pages
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    [btn] = [b for b in at.button if b.label == "Open in Explore"]
    btn.click().run()
    assert not at.exception
    assert at.session_state["smu_model_a"] == str(out)
    # Explore lists the run among the models and loads it
    ex = AppTest.from_file(str(ROOT / "app_pages" / "explore.py"), default_timeout=60).run()
    options = ex.selectbox(key="explore_model_choice").options
    label = next(o for o in options if run.id in o)
    ex.selectbox(key="explore_model_choice").set_value(label).run()
    assert not ex.exception and not ex.error
    assert any(m.label == "Picked by the masker" for m in ex.metric)


def test_a_started_run_is_the_one_watched_with_the_time_left(env, monkeypatch):
    """Issue 27.5: after Start run the page watches the new run (not the one watched before) and
    says how long it has left."""
    monkeypatch.setenv("SMU_MAX_RUNS", "2")
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    reg = _registry(env, "slow")
    old = reg.submit(strategy="random", data=ROOT / "sample_midi", steps=5000)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert at.selectbox(key="train_watch_select").value == old.id
    at.number_input(key="train_steps").set_value(400)
    at.button[0].click().run()
    assert not at.exception
    new = next(r for r in reg.list() if r.id != old.id)
    assert at.selectbox(key="train_watch_select").value == new.id
    wait_until(lambda: len([r for r in reg.progress(new.id) if r.get("event") == "step"]) >= 3, "three steps")
    at.run()
    assert "left" in " ".join(p.value["text"] if isinstance(p.value, dict) else str(p.text) for p in at.get("progress"))
    for r in reg.list():
        reg.cancel(r.id)


def test_time_left_from_progress_records():
    from smu_explain.runs import time_left

    recs = [{"event": "start", "step": 0, "wall_s": 0.0}] + [
        {"event": "step", "step": s, "wall_s": 10.0 + 2.0 * (s - 1)} for s in range(1, 6)]
    assert time_left(recs, 30) == pytest.approx(25 * 2.0)  # start-up (10 s) left out
    assert time_left(recs[:2], 30) is None  # one step is not a rate
    assert time_left(recs, 5) == 0.0
    assert time_left([{"step": "x", "wall_s": 1}], 30) is None


def _charts(at) -> list[str]:
    """The Plotly figures of the page, as their JSON specs."""
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_an_empty_folder_is_refused_before_a_run_starts(env, tmp_path):
    """A folder with no MIDI or score file (here: a text file and an empty sub-folder) is refused
    like a missing one, and no run is registered."""
    empty = tmp_path / "emptydir"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not music")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="train_data_choice").set_value("a folder")
    at.text_input(key="train_folder").set_value(str(empty))
    at.button[0].click().run()
    assert not at.exception, at.exception
    from smu_explain.markup import md_escape

    assert [e.value for e in at.error] == [f"Cannot start the run: {md_escape(empty)}: no MIDI or score files "
                                           "in this folder"]
    assert not at.success and _registry(env).list() == []
    # a folder with a MIDI file deep inside is not refused
    (empty / "sub" / "a.mid").write_bytes((ROOT / "sample_midi" / "bach_bwv66_6.mid").read_bytes())
    at.button[0].click().run()
    assert not at.error and any("Started run" in s.value for s in at.success)


def test_a_run_that_failed_before_any_step_shows_no_empty_charts(env, tmp_path):
    """A run that failed before its first step has no charts saying "no progress yet" (nothing more
    will come): a sentence says there is no progress to show."""
    data = tmp_path / "data"
    data.mkdir()
    reg = _registry(env)
    run = reg.submit(strategy="random", data=data, steps=10, start=False)
    data.rmdir()  # gone before it starts: the run fails unstarted
    assert _wait_status(reg, run.id, {"failed", "done", "cancelled"}).status == "failed"
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("The run failed" in e.value for e in at.error)
    assert not any("no progress yet" in spec for spec in _charts(at))
    assert "failed before its first training step" in _texts(at)


def test_a_run_that_skipped_files_or_had_little_data_says_so_by_its_status(env):
    """`smu pretrain` writes the files it skipped and a training set smaller than a batch into its
    progress file's start record (test_cli checks the real command); the status line says both
    (the first three files by name, with their reasons)."""
    reg = _registry(env)
    run = reg.submit(strategy="random", data=ROOT / "sample_midi", steps=3)
    assert _wait_status(reg, run.id, {"done", "failed", "cancelled"}).status == "done"
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert "Status: **done** - finished" in _texts(at) and "skipped" not in _texts(at)
    reasons = {"big.mid": "not a MIDI file (no 'MThd' header)", "drums.mid": "only drum notes",
               "my_file.mid": "empty file (0 bytes)", "text.mid": "not a MIDI file", "x.mid": "truncated: a: b"}
    progress = Path(run.progress_path)
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    records[0]["data"] = {"skipped": 5, "skipped_files": [[n, w] for n, w in reasons.items()],
                          "train_windows": 1, "batch_size_asked": 32}
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    at.run()
    assert not at.exception, at.exception
    status = next(m for m in _texts(at).split("Status: ")[1:] if m.startswith("**done**"))
    assert ("5 unusable files were skipped (big.mid: not a MIDI file (no 'MThd' header); drums.mid: only drum "
            "notes; my\\_file.mid: empty file (0 bytes); and 2 more)") in status, status
    assert "trained on 1 window of notes, fewer than one batch of 32" in status


def test_the_queued_message_follows_the_run(env):
    """"Run ... is queued" is said while that run waits, and not once it was cancelled; the page
    shows the cancel at once (the browser's check: the next test)."""
    reg = _registry(env, "slow")
    first = reg.submit(strategy="random", data=ROOT / "sample_midi", steps=5000)
    try:
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        at.button[0].click().run()
        [queued] = [r for r in reg.list() if r.id != first.id]
        assert [i.value for i in at.info if "is queued" in i.value] == [
            f"Run {queued.id} is queued: 1 run(s) at a time (SMU_MAX_RUNS). It starts when a slot frees."]
        [cancel] = [b for b in at.button if b.label == "Cancel run"]  # the queued run is the one watched
        cancel.click().run()
        assert not at.exception, at.exception
        assert reg.get(queued.id).status == "cancelled"
        assert not [i.value for i in at.info if "is queued" in i.value]
        assert "Status: **cancelled**" in _texts(at)  # the Cancel's callback ran before the view was drawn
    finally:
        reg.cancel(first.id)


@pytest.mark.browser
@pytest.mark.slow
def test_the_queued_message_goes_when_the_run_is_cancelled_in_the_browser(tmp_path):
    """In the browser the runs view reruns alone (every second, on Cancel), not the form above it:
    "Run ... is queued" went stale there after its run was cancelled."""
    from app_helpers import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    runs = tmp_path / "runs"
    env = {"SMU_RUNS_DIR": str(runs), "SMU_CLI": f"{sys.executable} {FAKE_CLI}", "FAKE_CLI_MODE": "slow",
           "SMU_MAX_RUNS": "1"}
    try:
        with StreamlitServer(PAGE, tmp_path, env) as url, sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator('input[aria-label="Steps"]').fill("5000")
            page.get_by_role("button", name="Start run").click()
            page.get_by_text("Started run").wait_for()
            page.get_by_role("button", name="Start run").click()
            page.get_by_text("is queued:").wait_for()
            page.get_by_role("button", name="Cancel run").click()
            page.get_by_text("Status: cancelled").wait_for()
            sync_api.expect(page.get_by_text("is queued:")).to_have_count(0, timeout=10_000)
            browser.close()
    finally:
        reg = RunRegistry(runs)
        for r in reg.list():
            if r.status in ("running", "queued"):
                reg.cancel(r.id, grace_s=3)
