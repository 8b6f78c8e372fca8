"""Why page (AppTest): attributions with a fine-tuned model, attention, counterfactuals, masker,
the missing-fine-tuned-model message and the HTML export."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import ROOT, make_model, page, texts
from smu_explain import appstate as A
from smu_explain.checkpoint import is_finetuned

PAGE = page("why.py")
SAMPLE = "bach_bwv66_6.mid"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("why") / "tiny", seed=1)


@pytest.fixture(scope="module")
def finetuned_dir(model_dir):
    """A tiny fine-tuned emotion model kept with the encoder (model_dir/finetuned/emotion),
    made with finetune's API (build_model from the pre-trained folder, save_pretrained)."""
    from smu_explain.finetune import build_model

    ft = build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=model_dir, seed=0)
    return ft.save_pretrained(model_dir / "finetuned" / "emotion")


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


def run_page(**state):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[A.K_PIECE] = (SAMPLE, (ROOT / "sample_midi" / SAMPLE).read_bytes())
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_all_tabs_with_models(model_dir, finetuned_dir):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [t.label for t in at.tabs] == ["Attributions", "Attention", "Counterfactuals", "Masker"]
    # attention and masker views come without a click
    assert len(at.dataframe) >= 3  # top attended notes, masker's top notes, losses per mask
    score = float(metric(at, "Masker score"))
    assert 0.0 < score < 1.0
    # the fine-tuned model kept with the encoder is found; attributions on request
    assert at.selectbox(key="why_ft_choice").value == str(finetuned_dir)
    assert "Task **emotion**" in texts(at)
    at.select_slider(key="why_steps").set_value(8).run()
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Explained class") in ["Q1", "Q2", "Q3", "Q4"]
    assert "IG completeness" in texts(at)
    # counterfactual: transpose the selected note, the prediction before/after is shown
    assert "Prediction before" in texts(at)
    at.selectbox(key="why_cf_kind").set_value("delete notes").run()
    at.text_input(key="why_cf_notes").set_value("0-4").run()
    assert not at.exception
    from smu_explain.tokenizer import read_piece

    n = len(read_piece(ROOT / "sample_midi" / SAMPLE))
    assert f"{n} notes before, {n - 5} after." in texts(at)
    at.text_input(key="why_cf_notes").set_value("3, x").run()
    assert any("cannot read 'x'" in e.value for e in at.error)
    assert not at.exception
    at.text_input(key="why_cf_notes").set_value("1").run()
    # a new note changes the masker explanation
    at.number_input(key="why_note").set_value(3).run()
    assert not at.exception
    assert "Note 3:" in texts(at)
    # the export holds every view shown
    assert "Included: attributions, attention, counterfactual, masker." in texts(at)
    assert at.session_state["smu_why"]["masker"]["text"].startswith("Note 3:")


def test_no_finetuned_model_says_how(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "MODELS_DIR", tmp_path / "no_models")
    bare = make_model(tmp_path / "bare", seed=2)
    at = run_page(**{A.K_MODEL_A: str(bare)})
    assert not at.exception, at.exception
    assert any("smu finetune" in i.value for i in at.info)


def test_broken_finetuned_folder_is_an_error_not_a_traceback(model_dir, tmp_path):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    at.selectbox(key="why_ft_choice").set_value(A.OTHER_FOLDER).run()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    at.text_input(key="why_ft_path").set_value(str(tmp_path / "broken")).run()
    assert not at.exception, at.exception
    assert any("Cannot load the model" in e.value for e in at.error)


def test_why_report_sections():
    import plotly.graph_objects as go
    import pandas as pd

    from smu_explain.report import WHY_HEADINGS, build_report, why_sections

    views = {"masker": {"text": "note <3>", "figures": [go.Figure(go.Bar(x=[1], y=[2]))],
                        "tables": [pd.DataFrame({"note": [1], "change": [0.5]})]},
             "attention": {"text": "rollout", "figures": [go.Figure()]}, "piece": "x.mid"}
    secs = why_sections(views)
    assert [s.heading for s in secs] == [WHY_HEADINGS["attention"], WHY_HEADINGS["masker"]]
    html = build_report("Why", secs)
    assert html.count("<h2>") == 2 and "note &lt;3&gt;" in html and html.count("<table") == 1


def test_note_task_model_explains_the_selected_note(model_dir, tmp_path):
    from smu_explain.finetune import build_model

    ft = build_model("melody", ["melody", "bridge", "piano"], pretrained=model_dir, seed=0)
    ft_dir = ft.save_pretrained(tmp_path / "melody-ft")
    key = A.piece_key((ROOT / "sample_midi" / SAMPLE).read_bytes())
    at = run_page(**{A.K_MODEL_A: str(model_dir), "why_note": 7, "why_note_for": key})
    at.selectbox(key="why_ft_choice").set_value(A.OTHER_FOLDER).run()
    at.text_input(key="why_ft_path").set_value(str(ft_dir)).run()
    at.select_slider(key="why_steps").set_value(8).run()
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "Task **melody** (note level" in texts(at)
    assert metric(at, "Explained class") in ["melody", "bridge", "piano"]
    assert at.session_state["smu_why"]["attributions"]["text"].startswith("Task melody; explained class")
    assert "for note 7 (probability" in at.session_state["smu_why"]["attributions"]["text"]
    # the counterfactual shows the note-level prediction (share of notes per class) before and after
    assert "Prediction before" in texts(at)


def test_shipped_demo_head_is_offered_out_of_the_box():
    """With the default models (no model chosen), the melody head shipped with demo-random
    (models/demo-random/finetuned/melody) is the Why page's fine-tuned model, and it explains."""
    head = A.MODELS_DIR / "demo-random" / "finetuned" / "melody"
    if not is_finetuned(head):
        pytest.skip("the demo melody head is not in models/")
    at = run_page(why_steps=8)
    assert not at.exception, at.exception
    assert at.selectbox(key="why_ft_choice").value == "models/demo-random/finetuned/melody"
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Explained class") in ["melody", "bridge", "piano"]


def test_the_note_survives_a_visit_to_another_page(model_dir):
    """Streamlit drops a page's widget state when another page runs: coming back shows the note
    chosen last (it used to fall back to note 0, a new costly masker explanation), and a new
    piece starts on its middle note again."""
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    n = len(A.read_piece_cached((ROOT / "sample_midi" / SAMPLE).read_bytes(), SAMPLE))
    assert at.number_input(key="why_note").value == A.why_default_note(n)
    at.number_input(key="why_note").set_value(5).run()

    def come_back(at, **change):  # a new run that keeps the session's other keys, not the widgets'
        kept = {k: at.session_state[k] for k in (A.K_MODEL_A, A.K_PIECE, "why_note_value", "why_note_for")}
        return run_page(**{**kept, **change})

    at = come_back(at)
    assert not at.exception, at.exception
    assert at.number_input(key="why_note").value == 5 and "Note 5:" in texts(at)
    other = "bach_bwv269.mid"
    at = come_back(at, **{A.K_PIECE: (other, (ROOT / "sample_midi" / other).read_bytes())})
    n2 = len(A.read_piece_cached((ROOT / "sample_midi" / other).read_bytes(), other))
    assert at.number_input(key="why_note").value == A.why_default_note(n2)


def test_masker_note_reruns_only_the_masks_for_a_new_ratio(model_dir, monkeypatch):
    """The occlusion (one pass per note of the window) is cached by note alone; a new ratio, mask
    count or seed re-runs only the recoverer's masks, and the same ratio reached another way
    (0.16 - 0.01) is the same entry. The result equals explain.explain_masker_note."""
    from smu_explain import explain

    calls = []
    real_occ, real_loss = explain.masker_occlusion, explain.masker_recovery_losses
    monkeypatch.setattr(explain, "masker_occlusion", lambda *a, **k: calls.append("occ") or real_occ(*a, **k))
    monkeypatch.setattr(explain, "masker_recovery_losses",
                        lambda *a, **k: calls.append("loss") or real_loss(*a, **k))
    data = (ROOT / "sample_midi" / SAMPLE).read_bytes()
    piece = A.read_piece_cached(data, SAMPLE)
    note = 11
    A.masker_note(model_dir, data, piece, note, 3, 0.15, 0)
    got = A.masker_note(model_dir, data, piece, note, 3, 0.3, 0)
    A.masker_note(model_dir, data, piece, note, 3, 0.16 - 0.01, 0)
    assert calls == ["occ", "loss", "loss"]
    model, tok = A.load_model(model_dir)
    monkeypatch.undo()
    ref = explain.explain_masker_note(model, tok, piece, note, n_masks=3, ratio=0.3, seed=0)
    assert got["score"] == pytest.approx(ref["score"]) and got["mean_loss"] == pytest.approx(ref["mean_loss"])
    assert got["top"]["note"].tolist() == ref["top"]["note"].tolist()


def test_a_figure_is_sent_only_with_its_tab_open(model_dir):
    """The browser draws the figures of the open tab only (the tabs rerun the page when one is
    opened); every view is still computed for the HTML export."""
    at = run_page(**{A.K_MODEL_A: str(model_dir)})

    def charts(at):
        return {c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")}

    assert charts(at) == set()  # Attributions: nothing explained yet
    for tab, key in (("Attention", "why_att_roll"), ("Counterfactuals", "why_cf_rolls"),
                     ("Masker", "why_mask_roll")):
        at.session_state["why_tab"] = tab
        at.run()
        assert not at.exception, at.exception
        shown = charts(at)
        assert key in shown and all(c.startswith(key.rsplit("_", 1)[0]) for c in shown), (tab, shown)
        assert "Included: attention, counterfactual, masker." in texts(at)
