"""Explore page (AppTest): pieces, models, the ratio slider, the note inspector, bad input."""

import numpy as np
import pytest
from app_helpers import ROOT, count_calls, make_model, page, texts
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A
from smu_explain import appwarmup as M
from smu_explain import appwidgets as W

PAGE = page("explore.py")
SAMPLES = sorted(p.name for p in (ROOT / "sample_midi").glob("*.mid"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models") / "tiny-a", seed=1)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


def run_page(**state):
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_sample_without_model_shows_roll_and_says_demo_missing():
    at = run_page()
    assert not at.exception
    if not A.DEMO_MODELS["demo adversarial"].exists():
        assert any("demo adversarial model is not there yet" in i.value for i in at.info)
    first = at.selectbox(key="explore_sample").value
    assert first == SAMPLES[0]
    n_notes = int(metric(at, "Notes").replace(",", ""))
    from smu_explain.reading import read_piece

    assert n_notes == len(read_piece(ROOT / "sample_midi" / first))
    # choosing another sample changes the piece
    at.selectbox(key="explore_sample").set_value(SAMPLES[1]).run()
    assert not at.exception
    assert int(metric(at, "Notes").replace(",", "")) == len(read_piece(ROOT / "sample_midi" / SAMPLES[1]))
    assert at.session_state[A.K_PIECE][0] == SAMPLES[1]
    # a sample with a pitch opened again while it sounds (unisons in a part): every note read, as PROVENANCE
    # counts them (425; symusic's own pairing made 414), nothing said
    at.selectbox(key="explore_sample").set_value("beethoven_op18no1_mvt1_excerpt.mid").run()
    assert not at.exception and metric(at, "Notes") == "425"
    assert not any("note-on(s) than notes read" in c.value for c in at.caption)
    # a file with a note-on never closed says so
    body = b"\x00\x90\x3c\x40\x83\x60\x3e\x40\x83\x60\x3e\x00\x00\xff\x2f\x00"  # 60 never closed; 62
    bad = (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + (480).to_bytes(2, "big")
           + b"MTrk" + len(body).to_bytes(4, "big") + body)
    at = run_page(**{A.K_PIECE: ("open.mid", bad)})
    assert not at.exception and metric(at, "Notes") == "1"
    assert any("The file has 1 more note-on(s) than notes read" in c.value for c in at.caption)


def test_model_overlay_ratio_slider_and_inspector(model_dir):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    assert not at.exception, at.exception
    assert at.selectbox(key="explore_model_choice").value == W.OTHER_FOLDER
    n = int(metric(at, "Notes").replace(",", ""))
    picked_15 = int(metric(at, "Picked by the masker"))
    # 30% of the notes are frozen (no freeze book), the masker picks 15% of the others
    assert picked_15 == max(1, round(0.15 * (n - round(0.3 * n))))
    at.slider(key="explore_ratio").set_value(0.40).run()
    assert not at.exception
    assert int(metric(at, "Picked by the masker")) == round(0.40 * (n - round(0.3 * n)))
    assert at.session_state[A.K_RATIO] == pytest.approx(0.40)
    # the UI says why "picked" is below the ratio: frozen notes are never masked
    m = next(m for m in at.metric if m.label == "Picked by the masker")
    assert "frozen" in m.help and "not frozen" in m.help
    assert "frozen notes" in texts(at) and "raw masker scores" in texts(at).lower()
    # a new ratio keeps the default ratio's guesses (no new model pass) until asked for
    assert "a random 15% of its neighbours" in texts(at)
    at.toggle(key="explore_exact").set_value(True).run()
    assert not at.exception
    assert "a random 40% of its neighbours" in texts(at)
    assert int(metric(at, "Picked by the masker")) == round(0.40 * (n - round(0.3 * n)))
    # the inspector shows the chosen note and the model's top guesses for it
    at.number_input(key="explore_note").set_value(3).run()
    assert not at.exception
    text = texts(at)
    assert "Masker score **" in text
    from smu_explain.readable import pitch_name
    from smu_explain.reading import read_piece

    piece = read_piece(ROOT / "sample_midi" / SAMPLES[0])
    assert f"**{pitch_name(int(piece.pitch[3]))}**" in text
    assert "bar.beat" not in text and ", beat " in text  # one form: "bar 13, beat 1"
    # ghost layer, one masking draw and audio all render without error
    at.toggle(key="explore_ghost").set_value(True).run()
    at.button(key="explore_draw").click().run()
    assert not at.exception
    assert "Draw #1" in texts(at)
    at.button(key="explore_audio").click().run()
    assert not at.exception
    assert "Played with: " in texts(at)
    assert len(at.get("audio")) == 2  # original and reconstruction


@pytest.mark.parametrize("name,data,why", [
    ("notes.txt", b"these are my notes, not music", "unsupported file type"),
    ("song.mid", b"these are my notes, not music", "neither a MIDI file nor a MusicXML score"),
    ("broken.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x90", "Cannot read broken.mid"),
])
def test_bad_uploads_are_errors(name, data, why):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_PIECE] = (name, data)
    at.run()
    assert at.radio(key="explore_source").value == "upload"
    assert not at.exception
    assert any(why in e.value for e in at.error), [e.value for e in at.error]
    # the app keeps working: back to a sample
    at.radio(key="explore_source").set_value("sample").run()
    assert not at.exception and not at.error


def test_piece_without_notes_is_an_error(midi_bytes):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_PIECE] = ("empty.mid", midi_bytes([]))
    at.run()
    assert at.radio(key="explore_source").value == "upload"
    assert not at.exception
    assert any("empty.mid" in e.value and "note" in e.value for e in at.error)


def test_oversize_file_states_the_limit():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_PIECE] = ("huge.mid", b"MThd" + bytes(21 * 1024 * 1024))
    at.run()
    assert at.radio(key="explore_source").value == "upload"
    assert not at.exception
    assert any("the limit is 20 MB" in e.value for e in at.error)
    cfg = (ROOT / ".streamlit" / "config.toml").read_text()
    assert "maxUploadSize = 20" in cfg


def test_missing_and_broken_model_folders(tmp_path):
    at = run_page()
    at.session_state[A.K_MODEL_A] = None  # nothing chosen before: the path box starts empty
    at.selectbox(key="explore_model_choice").set_value(W.OTHER_FOLDER).run()
    assert any("Type the path" in i.value for i in at.info)
    at.text_input(key="explore_model_path").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert any("Cannot load the model" in e.value and "not found" in e.value for e in at.error)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"garbage")
    at.text_input(key="explore_model_path").set_value(str(broken)).run()
    assert not at.exception
    assert any("Cannot load the model" in e.value for e in at.error)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    at.text_input(key="explore_model_path").set_value(str(pickled)).run()
    assert any("pickle" in e.value for e in at.error)
    # the roll is still drawn without a model
    assert int(metric(at, "Notes").replace(",", "")) > 0


@pytest.mark.parametrize("ratio", [0.15, 0.4])
def test_fast_overlay_matches_explain_table(model_dir, ratio):
    """The one-pass overlay of the first view (explain.masker_view, what appstate.overlay caches)
    gives explain_piece's score/picked/frozen."""
    from smu_explain.explain import explain_piece, masker_view
    from smu_explain.reading import read_piece
    from smu_explain.tokenizer_config import TokenizerConfig

    model, tok = A._load_model.__wrapped__(str(model_dir), 0.0)
    # a short max_len forces several overlapping windows
    from smu_explain.tokenizer import Tokenizer

    tok = Tokenizer(TokenizerConfig(**{**tok.config.to_dict(), "max_len": 64, "stride": 48}))
    piece = read_piece(ROOT / "sample_midi" / SAMPLES[0])
    over = masker_view(model, tok, piece, ratio)
    full = explain_piece(model, tok, piece, ratio=ratio)
    np.testing.assert_allclose(over["score"], full["score"], atol=1e-5)
    assert (over["frozen"] == full["frozen"]).all()
    assert (over["picked"] == full["picked"]).all()
    assert over["picked"].sum() == max(1, round(ratio * (len(piece) - round(0.3 * len(piece)))))


def test_huge_upload_is_refused_within_60_s(midi_bytes):
    """A 100,000-note upload ends in a plain refusal (the note limit), never a silent spinner."""
    import time

    notes = [(i * 60, 50, 48 + (i * 7) % 36) for i in range(100_000)]
    data = midi_bytes(notes)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_PIECE] = ("huge.mid", data)
    t0 = time.perf_counter()
    at.run()
    took = time.perf_counter() - t0
    assert not at.exception
    assert took < 60, took
    err = " ".join(e.value for e in at.error)
    assert "100,000 notes" in err and f"{A.MAX_NOTES:,}" in err and "shorter excerpts" in err
    assert not at.get("plotly_chart")  # the model never ran


def test_damaged_file_is_described_in_plain_words():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_PIECE] = ("cut.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x90")
    at.run()
    err = " ".join(e.value for e in at.error)
    assert "cut short" in err and "MTrk" not in err and "byte" not in err
    assert W.plain_reason("truncated MIDI file: chunk b'MTrk' at byte 41 claims 4096 bytes, 1 left").startswith(
        "the file is cut short")
    assert W.plain_reason("something new") == "something new"


def test_new_ratio_reuses_scores_and_guesses(model_dir):
    """Another ratio re-derives only ``picked``: the same as explain_piece at that ratio; the
    guesses come from the cached table of the masks asked for (one table per number of groups)."""
    from smu_explain.explain import explain_piece
    from smu_explain.reading import read_piece

    path = ROOT / "sample_midi" / SAMPLES[0]
    data, piece = path.read_bytes(), read_piece(path)
    model, tok = A._load_model.__wrapped__(str(model_dir), 0.0)
    at_30 = explain_piece(model, tok, piece, ratio=0.30, seed=0)
    at_15 = explain_piece(model, tok, piece, ratio=0.15, seed=0)
    # picks at 0.30 with the guesses of 0.15 (the page's default) ...
    quick = A.explain(str(model_dir), data, piece, 0.30, 0, A.DEFAULT_RATIO)
    assert (quick["picked"] == at_30["picked"]).all() and (quick["frozen"] == at_30["frozen"]).all()
    assert (quick["pred_pitch"] == at_15["pred_pitch"]).all() and quick["loss_pitch"].equals(at_15["loss_pitch"])
    # ... or every column as explain_piece at 0.30 when asked
    exact = A.explain(str(model_dir), data, piece, 0.30, 0)
    cols = [c for c in at_30.columns if not c.startswith("topk_")]
    assert exact[cols].equals(at_30[cols])
    # 0.14 masks in 7 groups like 0.15: same guesses, its own picks
    assert A.mask_groups(0.14) == A.mask_groups(0.15) == 7 and A.mask_groups(0.16) == 6
    at_14 = explain_piece(model, tok, piece, ratio=0.14, seed=0)
    assert A.explain(str(model_dir), data, piece, 0.14, 0)[cols].equals(at_14[cols])
    over = A.overlay(str(model_dir), data, piece, 0.30)
    assert (over["picked"] == at_30["picked"]).all()


def test_warm_up_waits_for_quiet(monkeypatch):
    """The warm-up steps aside for the sessions: no step starts while a page run is on or
    within QUIET_S of its end."""
    import threading
    import time

    monkeypatch.setattr(M, "QUIET_S", 0.3)
    seen = []
    with M.user_run():
        t = threading.Thread(target=lambda: seen.append(M._wait_for_quiet(0.01)))
        t.start()
        time.sleep(0.4)
        assert t.is_alive()  # still waiting: a run is on
    t.join(5)
    assert not t.is_alive() and seen[0] >= 0.4 + 0.3 - 0.05
    assert M._wait_for_quiet(0.01) == pytest.approx(0.0, abs=0.35)  # quiet: at most the rest of QUIET_S


def test_warm_up_runs_at_the_lowest_priority_and_the_sessions_keep_theirs():
    """The warm-up thread lowers its own CPU priority (nice 19), not the server's: the threads that
    run the sessions' pages keep theirs."""
    import os
    import threading

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    got = {}

    def warm_thread():
        got["ok"] = M.lower_priority()
        got["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=warm_thread)
    t.start()
    t.join(10)
    assert got["ok"] and got["nice"] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_roll_follows_the_ratio_and_figures_are_built_once_per_key(model_dir, monkeypatch):
    """The roll comes from appstate.figure (built once per key): it still shows the picks of the
    ratio on screen, also when a ratio comes back (its figure then from the cache)."""
    import json

    from smu_explain import pianoroll

    builds = []
    real = pianoroll.piano_roll
    monkeypatch.setattr(pianoroll, "piano_roll", lambda *a, **k: builds.append(1) or real(*a, **k))

    def picked_in_roll(at):
        spec = json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("explore_roll")).proto.spec)
        # (the tiny model's masker is untrained: its overlay is drawn faded and its legend says so)
        return len(next(t for t in spec["data"]
                        if str(t.get("name")).startswith("picked by masker (outlined)"))["customdata"])

    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    for ratio in (0.15, 0.4, 0.15):
        at.slider(key="explore_ratio").set_value(ratio).run()
        assert not at.exception
        assert picked_in_roll(at) == int(metric(at, "Picked by the masker"))
    n = len(builds)
    at.number_input(key="explore_note").set_value(2).run()  # the roll shows the same: not built again
    at.slider(key="explore_ratio").set_value(0.4).run()
    assert len(builds) == n and picked_in_roll(at) == int(metric(at, "Picked by the masker"))


def test_stored_masker_scores_draw_the_first_overlay_without_the_model(tmp_path, monkeypatch):
    """A sample whose masker view is stored beside the weights (checkpoint.save_masker_scores) is
    drawn from that file: the overlay never loads the model (the page loads it after the roll),
    another ratio re-derives the picks from the stored scores, stale weights fall back to the model."""
    import hashlib

    from smu_explain.checkpoint import save_masker_scores
    from smu_explain.picking import picks_at
    from smu_explain.reading import read_piece

    folder = make_model(tmp_path / "stored", seed=2)
    data = (ROOT / "sample_midi" / SAMPLES[0]).read_bytes()
    piece = read_piece(data, name="x")
    n = len(piece)
    scores = np.linspace(0.0, 1.0, n)
    # deliberately not the model's view: three picks, nothing frozen
    save_masker_scores(folder, {hashlib.sha256(data).hexdigest(): {
        "name": SAMPLES[0], "n_notes": n, "ratio": A.DEFAULT_RATIO, "score": scores.tolist(),
        "frozen": [], "picked": [0, 1, 2]}})
    at = run_page(**{A.K_MODEL_A: str(folder)})
    assert not at.exception, at.exception
    assert int(metric(at, "Picked by the masker")) == 3

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(A, "_load_model", no_model)
    view = A.overlay(str(folder), data, piece, A.DEFAULT_RATIO)
    assert np.flatnonzero(view["picked"]).tolist() == [0, 1, 2] and not view["frozen"].any()
    np.testing.assert_array_equal(A.overlay(str(folder), data, piece, 0.3)["picked"],
                                  picks_at(scores, np.zeros(n, dtype=bool), 0.3))
    monkeypatch.undo()
    make_model(folder, seed=3)  # new weights: the stored view is stale, the model scores the piece
    at = run_page(**{A.K_MODEL_A: str(folder)})
    assert not at.exception, at.exception
    assert int(metric(at, "Picked by the masker")) == max(1, round(0.15 * (n - round(0.3 * n))))


def test_the_first_roll_is_drawn_before_the_model_loads(tmp_path, monkeypatch):
    """With the masker view stored beside the weights, the page builds its roll before it loads the
    model (and so before torch): the notes said above the roll (no recovery heads, untrained head)
    read config.json, not the model."""
    import hashlib

    from smu_explain.checkpoint import save_masker_scores
    from smu_explain.reading import read_piece

    folder = make_model(tmp_path / "stored", seed=2)
    data = (ROOT / "sample_midi" / SAMPLES[0]).read_bytes()
    n = len(read_piece(data, name="x"))
    save_masker_scores(folder, {hashlib.sha256(data).hexdigest(): {
        "name": SAMPLES[0], "n_notes": n, "ratio": A.DEFAULT_RATIO, "score": np.linspace(0, 1, n).tolist(),
        "frozen": [], "picked": [0, 1, 2]}})
    events = []
    real_load, real_figure = A._load_model, A.figure

    def load(*a, **k):
        events.append("load")
        return real_load(*a, **k)

    def figure(key, build):
        events.append(key[0])
        return real_figure(key, build)

    monkeypatch.setattr(A, "_load_model", load)
    monkeypatch.setattr(A, "figure", figure)
    at = run_page(**{A.K_MODEL_A: str(folder)})
    assert not at.exception, at.exception
    assert "explore roll" in events and "load" in events
    assert events.index("explore roll") < events.index("load"), events


def test_draw_shows_its_outcome_and_what_the_picks_share(model_dir):
    """Draw a masking: the recovery under the random draw and under the masker's pick of as many
    notes (per attribute and on average), and a sentence on what the picked notes have in common;
    the same seed and draw number give the same words."""
    def draw():
        at = run_page(**{A.K_MODEL_A: str(model_dir)})
        at.button(key="explore_draw").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        return at

    at = draw()
    text = texts(at)
    assert "Draw #1" in text
    assert "**What the model put back.** With " in text and "under the random draw and" in text
    # one draw of a piece of 6 spans of 4 bars: no verdict on which was harder (audit F11)
    assert "hidden in one draw" in text and "too little music to tell which was harder" in text
    assert "pick was harder (" not in text and "draw was harder (" not in text
    assert "**What the picked notes have in common**" in text
    assert "picks are" in text or "look like the rest" in text or "too short" in text
    random_acc, masker_acc = metric(at, "Recovered, random draw"), metric(at, "Recovered, masker's pick")
    assert random_acc.endswith("%") and masker_acc.endswith("%")
    n_hidden = int(metric(at, "Notes hidden in each").replace(",", ""))
    assert n_hidden == int(metric(at, "Picked by the masker"))  # as many random notes as picked
    table = next(d.value for d in at.dataframe if "random draw" in d.value.columns)
    assert list(table["attribute"]) == ["bar", "position", "pitch", "duration", "mean"]
    assert table["random draw"].iloc[-1] == random_acc and table["masker's pick"].iloc[-1] == masker_acc
    shown = float(masker_acc[:-1]) - float(random_acc[:-1])  # the difference is that of the shown values
    assert f"{shown:+.1f} points for the masker's pick" in text
    assert float(table["difference (points)"].iloc[-1]) == pytest.approx(shown)
    profile = next(d.value for d in at.dataframe if "share of the picks" in d.value.columns)
    assert {"voice position", "metric", "duration", "register"} <= set(profile["label"])
    # the tiny model's masker was never trained: said, and its picks described as near arbitrary
    assert "close to arbitrary" in text and "drawn faded" in text
    again = draw()
    assert [m.value for m in again.metric] == [m.value for m in at.metric]
    assert texts(again) == text
    at.button(key="explore_draw").click().run()
    assert "Draw #2" in texts(at) and not at.exception


def test_the_draw_figure_is_built_once_per_draw(model_dir, monkeypatch):
    """After a draw, later reruns of Explore (here: plain reruns) reuse its figure; a new draw builds one."""
    from smu_explain import pianoroll

    built = count_calls(monkeypatch, pianoroll, "masking_draw_figure")
    A._figure_cached.clear()  # figures are server-wide: another test may have drawn this one already
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    at.button(key="explore_draw").click().run()
    assert not at.exception, at.exception
    at.run()
    at.run()
    assert len(built) == 1 and "Draw #1" in texts(at)
    at.button(key="explore_draw").click().run()
    assert len(built) == 2 and "Draw #2" in texts(at)


def test_ghost_layer_is_off_after_a_switch_to_another_piece(model_dir):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    at.toggle(key="explore_ghost").set_value(True).run()
    assert at.toggle(key="explore_ghost").value is True
    at.selectbox(key="explore_sample").set_value(SAMPLES[1]).run()
    assert not at.exception
    # a new piece starts without the ghost layer: the toggle and the roll agree (both off)
    assert at.toggle(key="explore_ghost").value is False


def _roll_spec(at):
    import json

    return json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("explore_roll")).proto.spec)


def test_colour_notes_by_role(model_dir):
    """"Colour notes by": the masker score by default; a role (harmony.analyze's labels) draws one
    trace per class with its count, without a model too (where the default is the track)."""
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    assert not at.exception, at.exception
    box = at.selectbox(key="explore_colour_by")
    assert box.value == "score" and box.format_func("score") == "masker score"
    for col, classes in (("chord_tone", {"chord tone"}), ("voice_position", {"bass", "top"}),
                         ("metric", {"downbeat"})):
        at.selectbox(key="explore_colour_by").set_value(col).run()
        assert not at.exception, at.exception
        names = {str(t.get("name")).split(":")[0] for t in _roll_spec(at)["data"]}
        assert classes <= names, (col, names)
        assert "Colour = " in texts(at) and "no model" in texts(at)
    # the picked notes keep their outline
    assert int(metric(at, "Picked by the masker")) > 0
    plain = run_page()  # the demo model (stored scores) or, where it is not there yet, no model
    if "Picked by the masker" not in [m.label for m in plain.metric]:
        assert plain.selectbox(key="explore_colour_by").format_func("score") == "track"
    plain.selectbox(key="explore_colour_by").set_value("harmony").run()
    assert not plain.exception, plain.exception
    assert any(str(t.get("name")).startswith("chord tone: ") for t in _roll_spec(plain)["data"])


def test_colour_choice_survives_an_upload():
    """The box comes back after the upload's first run (which does not draw it) still showing the
    masker score: with None as an option's value it came back empty ("Choose an option")."""
    at = run_page()
    at.radio(key="explore_source").set_value("upload").run()
    assert "explore_colour_by" not in [s.key for s in at.selectbox]  # no piece yet: no roll, no box
    at.session_state[A.K_PIECE] = ("mine.mid", (ROOT / "sample_midi" / SAMPLES[0]).read_bytes())
    at.run()
    assert not at.exception, at.exception
    box = at.selectbox(key="explore_colour_by")
    assert box.proto.HasField("default") and box.proto.default == 0 and box.value == "score"


def test_what_it_picks_for_the_piece_and_a_folder(model_dir, tmp_path):
    """The "What it picks" sentence and table for the piece (block bootstrap over its 4-bar spans)
    and, on asking, for a folder (bootstrap over its pieces); both kept for the report."""
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    assert not at.exception, at.exception
    assert "What it picks" in [h.value for h in at.subheader]
    text = texts(at)
    assert "**What it picks in this piece** (an untrained masker" in text
    # the first sample has 21 bars: 6 spans of 4 bars, too few to name a class of note (audit F10)
    assert ("There is too little music to tell what tiny-a's masker prefers: 1 piece with 6 spans of 4 bars, "
            "and at least 10 are needed") in text
    table = next(d.value for d in at.dataframe if "score vs same duration x register" in d.value.columns)
    assert {"chord or non-chord tone", "voice position", "metric weight", "duration", "register"} <= set(table["label"])
    assert table["notes"][table["label"] == "voice position"].sum() == int(metric(at, "Notes").replace(",", ""))
    saved = at.session_state["smu_picks"]["piece"]
    assert saved["model"] == "tiny-a" and saved["result"]["sentence"] in text.replace("\\", "")
    folder = tmp_path / "music"
    folder.mkdir()
    for name in SAMPLES[:3]:
        (folder / name).write_bytes((ROOT / "sample_midi" / name).read_bytes())
    (folder / "broken.mid").write_bytes(b"MThd nope")
    at.text_input(key="explore_picks_folder").set_value(str(folder)).run()
    at.button(key="explore_picks_go").click().run()
    assert not at.exception, at.exception
    text = texts(at)
    assert "**What it picks over the folder** (an untrained masker" in text
    assert "3 pieces" in text and "broken.mid" in text
    # 6 + 3 + 10 spans of 4 bars: enough to say, with the number of classes tested
    assert ("Beyond duration and register, tiny-a's masker scores" in text
            or "tiny-a's masker shows no clear pattern beyond duration and register" in text)
    assert "classes tested, so each interval is at" in text and "over 19 spans of 4 bars of 3 pieces" in text
    tables = [d.value for d in at.dataframe if "score vs same duration x register" in d.value.columns]
    assert len(tables) == 2 and tables[1]["pieces"].max() == 3
    assert at.session_state["smu_picks"]["folder"]["result"]["n_pieces"] == 3
    at.text_input(key="explore_picks_folder").set_value(str(tmp_path / "nowhere")).run()
    at.button(key="explore_picks_go").click().run()
    assert not at.exception and any("Cannot measure on this folder" in e.value for e in at.error)


def test_warm_up_imports_scipy_stats_for_the_first_clicks(monkeypatch):
    """The warm-up imports scipy.stats (Explore's draw, Why's Spearman need it; ~0.6 s on a first click),
    as one of its steps, with nothing else to warm (no demo models, no samples)."""
    monkeypatch.setattr(A, "DEMO_MODELS", {})
    monkeypatch.setattr(A, "list_samples", lambda: [])
    monkeypatch.setattr(A, "folder_rules", lambda *a: None)
    import threading

    status = {"done": [], "errors": [], "finished_s": None}
    t = threading.Thread(target=M._warm, args=(status,))  # its own thread: the warm-up lowers its priority
    t.start()
    t.join(60)
    assert [w for w, _ in status["done"]] == ["import scipy.stats"] and not status["errors"]
    assert status["finished_s"] is not None
