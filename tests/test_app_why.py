"""Why page (AppTest): attributions with a fine-tuned model, attention, counterfactuals, masker,
the missing-fine-tuned-model message and the HTML export."""

from __future__ import annotations

import pytest
from app_helpers import ROOT, make_model, page, texts
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain.checkpoint import is_finetuned, save_checkpoint

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
    return save_checkpoint(model_dir / "finetuned" / "emotion", ft)


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


def open_tab(at, tab):
    at.session_state["why_tab"] = tab
    return at.run()


def test_all_tabs_with_models(model_dir, finetuned_dir):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [t.label for t in at.tabs] == ["Attributions", "Attention", "Counterfactuals", "Masker"]
    # the page says what it explains: the head kept with the page's model, fine-tuned from it
    assert at.selectbox(key="why_ft_choice").value == str(finetuned_dir)
    who = at.info[0].value
    assert who.startswith("Predictions and attributions: the **emotion** head fine-tuned on ")
    assert "another model" not in who
    # the answer first, in plain words; only the open tab is computed (no attention or masker yet)
    assert "The **emotion** head says the piece is **" in texts(at)
    assert len(at.dataframe) == 0
    at.select_slider(key="why_steps").set_value(8).run()
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "**Why the piece is " in texts(at) and "Red = pushed towards it" in texts(at)
    # the method's details are folded away in an expander, under the plain sentence
    details = next(e for e in at.expander if e.label.startswith("How this was computed"))
    assert "IG completeness" in " ".join(str(c.value) for c in details.caption)
    assert metric(at, "Explained class") in ["Q1", "Q2", "Q3", "Q4"]
    # the other tabs compute their view when opened
    at = open_tab(at, "Masker")
    assert not at.exception, at.exception
    score = float(metric(at, "Masker score"))
    assert 0.0 < score < 1.0
    assert "The masker scores note " in texts(at)  # the answer first, in words
    assert len(at.dataframe) == 1  # losses per mask; the occlusion (costly) on request
    at.button(key="why_mask_go").click().run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == 2  # + the notes that drive the score most
    at = open_tab(at, "Attention")
    assert len(at.dataframe) == 1 and not at.exception
    at = open_tab(at, "Counterfactuals")
    # counterfactual: transpose the selected note, the prediction before/after is shown
    assert "Prediction before" in texts(at)
    at.selectbox(key="why_cf_kind").set_value("delete notes").run()
    at.text_input(key="why_cf_notes").set_value("0-4").run()
    assert not at.exception
    from smu_explain.reading import read_piece

    n = len(read_piece(ROOT / "sample_midi" / SAMPLE))
    assert f"{n} notes before, {n - 5} after." in texts(at)
    at.text_input(key="why_cf_notes").set_value("3, x").run()
    assert any("cannot read 'x'" in e.value for e in at.error)
    assert not at.exception
    at.text_input(key="why_cf_notes").set_value("1").run()
    # the export holds every view seen for this note
    assert "Included: attributions, attention, counterfactual, masker." in texts(at)
    # a new note changes the masker explanation, and starts a new export
    at.number_input(key="why_note").set_value(3).run()
    at = open_tab(at, "Masker")
    assert not at.exception
    assert "Note 3:" in texts(at)
    assert "Included: counterfactual, masker." in texts(at)  # the two tabs opened since (not attributions)
    assert at.session_state["smu_why"]["masker"]["text"].startswith("Note 3:")


def test_no_finetuned_model_says_how(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "MODELS_DIR", tmp_path / "no_models")
    bare = make_model(tmp_path / "bare", seed=2)
    at = run_page(**{A.K_MODEL_A: str(bare)})
    assert not at.exception, at.exception
    assert any("smu finetune" in i.value for i in at.info)


def test_broken_finetuned_folder_is_an_error_not_a_traceback(model_dir, tmp_path):
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    at.selectbox(key="why_ft_choice").set_value(W.OTHER_FOLDER).run()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    at.text_input(key="why_ft_path").set_value(str(tmp_path / "broken")).run()
    assert not at.exception, at.exception
    assert any("Cannot load the model" in e.value for e in at.error)


def test_why_report_sections():
    import pandas as pd
    import plotly.graph_objects as go

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
    ft_dir = save_checkpoint(tmp_path / "melody-ft", ft)
    key = A.piece_key((ROOT / "sample_midi" / SAMPLE).read_bytes())
    at = run_page(**{A.K_MODEL_A: str(model_dir), "why_note": 7, "why_note_for": key})
    at.selectbox(key="why_ft_choice").set_value(W.OTHER_FOLDER).run()
    at.text_input(key="why_ft_path").set_value(str(ft_dir)).run()
    at.select_slider(key="why_steps").set_value(8).run()
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "The **melody** head says note 7 is **" in texts(at)
    assert "**Why note 7 is " in texts(at)
    assert metric(at, "Explained class") in ["melody", "bridge", "piano"]
    assert at.session_state["smu_why"]["attributions"]["text"].startswith("Task melody; explained class")
    assert "for note 7 (probability" in at.session_state["smu_why"]["attributions"]["text"]
    # the counterfactual shows the note-level prediction (share of notes per class) before and after
    at = open_tab(at, "Counterfactuals")
    assert "Prediction before" in texts(at)


def test_shipped_demo_head_is_offered_out_of_the_box():
    """With the default models (no model chosen: demo adversarial), a shipped melody head is the Why
    page's fine-tuned model, and it explains: demo adversarial's own
    (models/demo-adversarial/finetuned/melody) where it is shipped, else demo-random's, and then the
    page says the head comes from another model."""
    own = A.MODELS_DIR / "demo-adversarial" / "finetuned" / "melody"
    head = A.MODELS_DIR / "demo-random" / "finetuned" / "melody"
    if not is_finetuned(head) and not is_finetuned(own):
        pytest.skip("no demo melody head in models/")
    at = run_page(why_steps=8)
    assert not at.exception, at.exception
    who = at.info[0].value
    if is_finetuned(own):
        assert at.selectbox(key="why_ft_choice").value == "models/demo-adversarial/finetuned/melody"
        assert who.startswith("Predictions and attributions: the **melody** head fine-tuned on **demo adversarial**")
        assert "models/demo-random/finetuned/melody" in at.selectbox(key="why_ft_choice").options
    else:
        assert at.selectbox(key="why_ft_choice").value == "models/demo-random/finetuned/melody"
        assert "because **demo adversarial** has no fine-tuned head" in who
    at.button(key="why_attr_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Explained class") in ["melody", "bridge", "piano"]
    assert "The **melody** head says note " in texts(at)


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
    (0.16 - 0.01) is the same entry. The result equals masker_note.explain_masker_note."""
    from smu_explain import masker_note

    calls = []
    real_occ, real_loss = masker_note.masker_occlusion, masker_note.masker_recovery_losses
    monkeypatch.setattr(masker_note, "masker_occlusion", lambda *a, **k: calls.append("occ") or real_occ(*a, **k))
    monkeypatch.setattr(masker_note, "masker_recovery_losses",
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
    ref = masker_note.explain_masker_note(model, tok, piece, note, n_masks=3, ratio=0.3, seed=0)
    assert got["score"] == pytest.approx(ref["score"]) and got["mean_loss"] == pytest.approx(ref["mean_loss"])
    assert got["top"]["note"].tolist() == ref["top"]["note"].tolist()


def test_a_view_is_computed_and_sent_only_with_its_tab_open(model_dir):
    """Only the open tab's view is computed and its figures sent (the tabs rerun the page when one is
    opened); the export keeps every view seen for the note."""
    at = run_page(**{A.K_MODEL_A: str(model_dir)})

    def charts(at):
        return {c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")}

    assert charts(at) == set()  # Attributions: nothing explained yet
    seen = []
    for tab, key, view in (("Attention", "why_att_roll", "attention"),
                           ("Counterfactuals", "why_cf_rolls", "counterfactual"),
                           ("Masker", "why_mask_roll", "masker")):
        at = open_tab(at, tab)
        if tab == "Masker":
            at.button(key="why_mask_go").click().run()
        assert not at.exception, at.exception
        shown = charts(at)
        assert key in shown and all(c.startswith(key.rsplit("_", 1)[0]) for c in shown), (tab, shown)
        seen.append(view)
        assert f"Included: {', '.join(seen)}." in texts(at)


def test_the_page_says_which_model_and_head_it_explains(tmp_path, monkeypatch):
    """The page names the model and the head; a head fine-tuned from another model than the page's
    is said so, with the reason (the page's model has no head of its own); once the page's model has
    a head, that head is the default and the page says it explains that model."""
    from smu_explain.finetune import build_model

    models = tmp_path / "models"
    enc_a = make_model(models / "enc-a", seed=3, strategy="adversarial")
    enc_b = make_model(models / "enc-b", seed=4, strategy="random")
    save_checkpoint(enc_b / "finetuned" / "melody",
                    build_model("melody", ["melody", "bridge", "piano"], pretrained=enc_b, seed=0))
    monkeypatch.setattr(A, "MODELS_DIR", models)
    at = run_page(**{A.K_MODEL_A: str(enc_a)})
    assert not at.exception, at.exception
    options = at.selectbox(key="why_ft_choice").options
    assert options.count("models/enc-b/finetuned/melody") == 1 and len(options) == 2  # + other folder
    who = at.info[0].value
    assert who.startswith("**Predictions and attributions come from another model than the page's:**")
    assert "the **melody** head fine-tuned on **models/enc-b**" in who
    assert "because **models/enc-a** has no fine-tuned head" in who
    assert "the masker: **models/enc-a**" in who
    # jargon is folded away: the tab's first words are the head's answer, not the method
    assert "The **melody** head says note " in texts(at)
    first = texts(at)
    assert "integrated gradients" not in first.split("The **melody** head says")[0].lower()
    # the page's model gets a head of its own: it becomes the default, and the sentence says so
    save_checkpoint(enc_a / "finetuned" / "melody",
                    build_model("melody", ["melody", "bridge", "piano"], pretrained=enc_a, seed=0))
    at = run_page(**{A.K_MODEL_A: str(enc_a)})
    assert at.selectbox(key="why_ft_choice").value == "models/enc-a/finetuned/melody"
    who = at.info[0].value
    assert who.startswith("Predictions and attributions: the **melody** head fine-tuned on **models/enc-a**")
    # choosing the other model's head says why it is not the page's model's
    at.selectbox(key="why_ft_choice").set_value("models/enc-b/finetuned/melody").run()
    who = at.info[0].value
    assert "another model than the page's" in who and "chosen above" in who
    assert "`models/enc-a/finetuned/melody`" in who


def test_a_note_seen_before_comes_back_explained(model_dir, finetuned_dir, tmp_path):
    """Explanations are kept per note: after Explain on two notes, going back to the first shows its
    explanation again without a click and without a new computation."""
    from smu_explain.finetune import build_model

    ft = build_model("melody", ["melody", "bridge", "piano"], pretrained=model_dir, seed=0)
    ft_dir = save_checkpoint(tmp_path / "melody-ft", ft)
    at = run_page(**{A.K_MODEL_A: str(model_dir), "why_steps": 8})
    at.selectbox(key="why_ft_choice").set_value(W.OTHER_FOLDER).run()
    at.text_input(key="why_ft_path").set_value(str(ft_dir)).run()
    at.number_input(key="why_note").set_value(4).run()
    at.button(key="why_attr_go").click().run()
    assert "**Why note 4 is " in texts(at)
    at.number_input(key="why_note").set_value(5).run()
    assert "**Why note 5" not in texts(at) and "Press **Explain the prediction**" in texts(at)
    assert "The **melody** head says note 5 is **" in texts(at)  # the answer at once, no click
    at.button(key="why_attr_go").click().run()
    assert "**Why note 5 is " in texts(at)
    at.number_input(key="why_note").set_value(4).run()
    assert "**Why note 4 is " in texts(at) and not at.exception


def test_folder_paths_show_as_typed_and_an_unloadable_head_explains_nothing(model_dir, tmp_path):
    """A head folder's path is shown in a code span as it is (no Markdown escape: a backslash would
    show in `audit\\_app`; a backtick in the name lengthens the fence); a folder that cannot be
    loaded is said so, not named as where the predictions come from."""
    from smu_explain.finetune import build_model

    ft_dir = save_checkpoint(tmp_path / "audit_app" / "my_*head",
                             build_model("melody", ["melody", "bridge", "piano"], pretrained=model_dir, seed=0))
    at = run_page(**{A.K_MODEL_A: str(model_dir)})
    at.selectbox(key="why_ft_choice").set_value(W.OTHER_FOLDER).run()
    at.text_input(key="why_ft_path").set_value(str(ft_dir)).run()
    who = at.info[0].value
    assert f"(`{ft_dir}`; classes" in who and "\\" not in who, who
    empty = tmp_path / "audit_app" / "empty`dir"
    empty.mkdir()
    at.text_input(key="why_ft_path").set_value(str(empty)).run()
    assert not at.exception, at.exception
    assert any("Cannot load the model" in e.value for e in at.error)
    who = at.info[0].value
    assert f"``{empty}``" in who and "cannot be loaded" in who and "Predictions" not in who, who
    assert "\\" not in who


@pytest.mark.parametrize("after, delta", [(0.22249, "-0.001"), (0.2226, "")])
def test_the_counterfactual_delta_is_that_of_the_shown_values(model_dir, monkeypatch, after, delta):
    """Mean masker score 0.223 before and 0.222 after: the delta is -0.001 (the shown values' own
    difference, not "-0.000"); values that read the same have no delta."""
    real = A.overlay
    original = (ROOT / "sample_midi" / SAMPLE).read_bytes()

    def overlay(path, data, piece, ratio):
        return real(path, data, piece, ratio).assign(score=0.22251 if data == original else after)

    monkeypatch.setattr(A, "overlay", overlay)
    at = open_tab(run_page(**{A.K_MODEL_A: str(model_dir)}), "Counterfactuals")
    assert not at.exception, at.exception
    shown = {m.label: m for m in at.metric}
    assert shown["Mean masker score before"].value == "0.223"
    assert shown["after"].value == f"{after:.3f}" and shown["after"].delta == delta


@pytest.mark.parametrize("name", [SAMPLE, "bach_bwv269.mid"])  # 9 bars (shown whole), 21 bars
def test_the_counterfactual_rolls_say_which_bars_they_show(model_dir, name):
    """Before/after rolls of a piece longer than the opening view say so, as Explore's and Compare's."""
    from smu_explain.reading import read_piece
    from smu_explain.rollaxes import INITIAL_BARS

    path = ROOT / "sample_midi" / name
    n_bars = len(read_piece(path).bar_starts_q)
    at = open_tab(run_page(**{A.K_MODEL_A: str(model_dir), A.K_PIECE: (name, path.read_bytes())}),
                  "Counterfactuals")
    assert not at.exception, at.exception
    said = [c.value.strip() for c in at.caption if c.value.startswith("Showing bars")]
    assert said == ([f"Showing bars 1-{INITIAL_BARS} of {n_bars}: drag the slider under either roll (or pan) to "
                     "move through the piece."] if n_bars > INITIAL_BARS else [])


def test_the_masker_loss_table_has_one_number_format_a_column(model_dir):
    """The recoverer's losses (0 beside 0.038, 2.57 beside 2.367 before): every float column is shown
    with 3 fixed decimals, as numbers (they still sort as numbers)."""
    import json

    at = open_tab(run_page(**{A.K_MODEL_A: str(model_dir)}), "Masker")
    assert not at.exception, at.exception
    [losses] = at.dataframe  # the occlusion's table comes on request
    floats = [c for c in losses.value.columns if losses.value[c].dtype.kind == "f"]
    assert "loss (all attributes)" in floats and "bar loss" in floats
    config = json.loads(losses.proto.columns)
    for c in floats:
        assert config[c]["type_config"]["format"] == "%.3f", (c, config.get(c))
