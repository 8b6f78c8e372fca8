"""Compare page (AppTest): two models on a piece and a folder, bias view, metrics, errors."""

import re

import numpy as np
import pandas as pd
import pytest
from app_helpers import make_model, page, run_report, texts
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A
from smu_explain.checkpoint import save_checkpoint, task_heads

PAGE = page("compare.py")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return make_model(d / "model-one", seed=1), make_model(d / "model-two", seed=2)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


def run_page(models):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(models[0])
    at.session_state[A.K_MODEL_B] = str(models[1])
    return at.run()


def shown(table) -> pd.DataFrame:
    """An ``st.table`` of a Styler as a person reads it: its cells' display texts."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return convert_arrow_bytes_to_pandas_df(table.proto.arrow_data.styler.display_values)


def test_without_models_asks_for_two(tmp_path, monkeypatch):
    # a checkout without the demo models (e.g. before `make demo-models`)
    monkeypatch.setattr(A, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(A, "MODELS_DIR", tmp_path / "no-models")
    monkeypatch.setattr(A, "DEMO_MODELS", {k: tmp_path / "no-models" / v.name for k, v in A.DEMO_MODELS.items()})
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("Choose two models" in i.value for i in at.info)


def test_two_models_on_a_piece(models):
    at = run_page(models)
    assert not at.exception, at.exception
    heads = [s.value for s in at.subheader]
    assert heads == ["Who recovers more", "Recovery accuracy under the same random masks", "Bias view",
                     "Downstream predictions", "Metrics"]
    # the answer first: a verdict sentence under random masks and one for the masker's picks
    md = [m.value for m in at.markdown]
    random_line = next(m for m in md if m.startswith("**Under random masks**: "))
    assert re.search(r"recovers more than|no clear difference between", random_line)
    assert "paired bootstrap over" in random_line and "95% interval" in random_line
    assert any(m.startswith("**Under the masker's picks**") for m in md)
    # the answer first: above the rolls, though computed after them
    caps = [c.value for c in at.caption]
    first = next(i for i, c in enumerate(caps) if c.startswith("Units: the notes of this piece"))
    assert first < next(i for i, c in enumerate(caps) if "Colour = the rank" in c)
    # which models the Study is about, and how they differ from these
    assert any("Compared here, one training run each: model-one" in c.value for c in at.caption)
    comp = at.session_state["smu_compare"]
    v = comp["verdicts"]["random"]
    assert v["names"] == ["model-one", "model-two"] and v["unit"] == "note"
    assert v["mean"]["lo"] <= v["mean"]["diff"] <= v["mean"]["hi"]
    assert any(i.value.startswith("Neither model folder holds a fine-tuned task head") for i in at.info)
    # a static table (every row shown, no inner scrolling), each row in its own format
    assert not at.dataframe
    table = at.table[0].value
    assert list(table.columns) == ["model-one", "model-two", "difference"]
    row = table.loc["recovery pitch (piece)"]
    assert row["difference"] == pytest.approx(row["model-two"] - row["model-one"])
    assert 0.0 <= row["model-one"] <= 1.0
    # a difference of two accuracies is in percentage points (audit C1), not a relative "+3.2%"
    cell = shown(at.table[0]).loc["recovery pitch (piece)", "difference"]
    assert cell == f"{100 * row['difference']:+.1f} points", cell
    comp = at.session_state["smu_compare"]
    assert set(comp["tables"]) == {"model-one", "model-two"}
    # the bias view switches grouping without error
    for by in ("metric", "duration"):
        at.selectbox(key="compare_by").set_value(by).run()
        assert not at.exception
    # a different ratio re-runs both models
    at.slider(key="compare_ratio").set_value(0.3).run()
    assert not at.exception
    assert at.session_state["smu_compare"]["ratio"] == pytest.approx(0.3)


def test_rolls_say_which_bars_they_show_and_reach_every_bar(models):
    """Audit C2: a piece longer than the rolls' opening bars says so, and each roll has a range slider."""
    import json

    from smu_explain.reading import read_piece
    from smu_explain.rollaxes import INITIAL_BARS

    at = run_page(models)
    name, data = at.session_state[A.K_PIECE]
    n_bars = len(read_piece(data, name=name).bar_starts_q)
    assert n_bars > INITIAL_BARS, name
    assert any(c.value.startswith(f"Showing bars 1-{INITIAL_BARS} of {n_bars}: drag the slider under either roll")
               for c in at.caption), [c.value for c in at.caption]
    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert layout["xaxis"]["rangeslider"]["visible"] and layout["xaxis2"]["rangeslider"]["visible"]


@pytest.mark.parametrize("name,data,why", [
    ("empty.mid", b"", "the file is empty"),
    ("song.mid", b"these are my notes, not music", "neither a MIDI file nor a MusicXML score"),
])
def test_unreadable_upload_shows_only_its_error(models, name, data, why):
    """Audit C3: the error says why, and no "Pick a piece above." follows (the user did pick one)."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[A.K_MODEL_A], at.session_state[A.K_MODEL_B] = str(models[0]), str(models[1])
    at.session_state[A.K_PIECE] = (name, data)
    at.run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and f"Cannot read {name}: " in at.error[0].value and why in at.error[0].value
    assert not any("Pick a piece" in i.value for i in at.info), [i.value for i in at.info]
    # nothing chosen yet (the upload source, no file): the hint
    at.session_state[A.K_PIECE] = None
    at.run()
    assert any("Pick a piece above." in i.value for i in at.info) and not at.error


def test_the_same_model_twice_is_said_once_and_not_compared(models, tiny_midi_dir):
    """Audit C4: A = B is said once, its warning (an untrained masker) shown once, and no verdict
    pretends to compare two models, on the piece or the folder."""
    at = run_page((models[1], models[1]))
    assert not at.exception, at.exception
    same = [i.value for i in at.info if "are the same model" in i.value]
    assert len(same) == 1 and "model-two" in same[0], [i.value for i in at.info]
    warns = [w.value for w in at.warning]
    assert len(warns) == 1 and warns == [A.untrained_masker_note(models[1])], warns
    assert "Who recovers more" not in [h.value for h in at.subheader]
    assert not any(m.value.startswith("**Under random masks**") for m in at.markdown)
    assert "verdicts" not in at.session_state["smu_compare"]
    at.text_input(key="compare_folder").set_value(str(tiny_midi_dir)).run()
    at.button(key="compare_eval").click().run()
    assert not at.exception, at.exception
    assert "Recovery over 4 files" in [h.value for h in at.subheader]
    assert not any("paired bootstrap" in m.value for m in at.markdown)
    assert at.session_state["smu_compare"]["folder"]["verdicts"] is None


def test_folder_evaluation_skips_bad_files(models, tiny_midi_dir):
    (tiny_midi_dir / "junk.mid").write_bytes(b"not a midi file")
    at = run_page(models)
    at.text_input(key="compare_folder").set_value(str(tiny_midi_dir)).run()
    at.button(key="compare_eval").click().run()
    assert not at.exception, at.exception
    assert any("1 file(s) skipped" in w.value and "junk.mid" in w.value for w in at.warning)
    comp = at.session_state["smu_compare"]
    assert comp["folder"]["n_files"] == 4
    assert "Who recovers more over 4 files" in [h.value for h in at.subheader]
    fv = comp["folder"]["verdicts"]["random"]
    assert fv["unit"] == "piece" and fv["n_units"] == 4
    # 4 pieces are too few for an interval over pieces: no winner named (audit F4)
    assert fv["winner"] is None and fv["undecided"].startswith("too few pieces")
    assert any("no verdict: too few pieces to tell (4;" in m.value for m in at.markdown)
    assert "recovery pitch (folder)" in at.table[0].value.index
    assert shown(at.table[0]).loc["recovery pitch (folder)", "difference"].endswith(" points")


def test_missing_folder_is_an_error(models, tmp_path):
    at = run_page(models)
    at.text_input(key="compare_folder").set_value(str(tmp_path / "nope")).run()
    at.button(key="compare_eval").click().run()
    assert not at.exception
    assert any("folder not found" in e.value for e in at.error)


def test_downstream_predictions_from_a_finetuned_head(tmp_path):
    from smu_explain.finetune import build_model

    a = make_model(tmp_path / "with-head", seed=3)
    b = make_model(tmp_path / "plain", seed=4)
    head = build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=a)
    save_checkpoint(a / "finetuned" / "emotion", head)
    note_head = build_model("melody", ["melody", "bridge", "piano"], pretrained=a)
    save_checkpoint(a / "finetuned" / "melody", note_head)
    assert [p.name for p in task_heads(a)] == ["emotion", "melody"]
    assert task_heads(b) == []
    at = run_page((a, b))
    assert not at.exception, at.exception
    text = texts(at)
    assert "task **emotion**" in text and "task **melody**" in text
    assert "mean confidence" in text
    assert not any("None: neither" in i.value for i in at.info)
    # a fine-tuned folder chosen as the model itself loads through its encoder
    at2 = run_page((a / "finetuned" / "emotion", b))
    assert not at2.exception and not at2.error


def test_untrained_masker_is_flagged(tmp_path):
    """Only an adversarial model has a trained masker head; a random-mask model is flagged."""
    adv = make_model(tmp_path / "adv", seed=1, strategy="adversarial")
    rnd = make_model(tmp_path / "rnd", seed=2, strategy="random")
    at = run_page((adv, rnd))
    assert not at.exception, at.exception
    flagged = [w.value for w in at.warning if "masker head was never trained" in w.value]
    assert len(flagged) == 1 and flagged[0].startswith("rnd was pre-trained with the random strategy")
    # the masker's picks are the trained masker's (adv's), the warning goes to the report
    comp = at.session_state["smu_compare"]
    assert comp["verdicts"]["picks_text"].startswith("the notes {a}'s masker would hide")
    assert any(m.value.startswith("**Under the masker's picks** (") and "the notes adv's masker would hide" in m.value
               for m in at.markdown)
    assert comp["warnings"] == flagged
    # two untrained maskers: no verdict on picks, said so
    at2 = run_page((make_model(tmp_path / "r1", seed=3, strategy="random"), rnd))
    assert any("no verdict: neither model's masker head was trained" in m.value for m in at2.markdown)


def test_rules_verdict_speaks_percentages_like_the_charts():
    text = A.rules_verdict({"pitch": 0.115, "bar": 0.9423},
                           {"most_frequent": {"pitch": 0.0734, "bar": 0.942}, "copy_neighbour": {"pitch": 0.05}})
    assert "pitch: 11.5% vs most frequent value 7.3% - learned" in text
    assert "bar: 94.2% vs most frequent value 94.2% - tied with the rule as shown" in text  # audit F5
    assert not re.search(r"\d\.\d{3}", text)


def test_folder_evaluation_reads_each_file_once_and_shares_the_pieces_model_passes(models, tiny_midi_dir,
                                                                                  monkeypatch):
    """The folder's explain tables and rules parse each file once, reuse the explain table of a
    piece already evaluated (the page's, the warm-up's), run again only for another number of
    mask groups (0.16 and 0.17: 6 groups), and equal what explain_piece gives on each file."""
    from smu_explain import explain, reading, sandbox
    from smu_explain.baselines import piece_rules

    for cached in (A._read_piece_cached, A.explain_cached, A.folder_explain_cached, A.folder_rule_table_cached):
        cached.clear()  # the files' contents may be cached by another test
    calls = {"read": 0, "explain": 0}
    real_read, real_explain = reading.read_piece, explain.explain_piece
    real_bounded = sandbox.read_piece_bounded  # the app reads every file in a bounded worker process
    monkeypatch.setattr(sandbox, "read_piece_bounded",
                        lambda *a, **k: calls.__setitem__("read", calls["read"] + 1) or real_bounded(*a, **k))
    monkeypatch.setattr(explain, "explain_piece",
                        lambda *a, **k: calls.__setitem__("explain", calls["explain"] + 1) or real_explain(*a, **k))
    model_dir = str(models[0])
    a = (tiny_midi_dir / "a.mid").read_bytes()
    A.explain(model_dir, a, A.read_piece_cached(a, "a.mid"), 0.16, 0)  # as the page would
    calls.update(read=0, explain=0)
    table, skipped = A.folder_explain(model_dir, tiny_midi_dir, 0.16, 0)
    rules = A.folder_rules(model_dir, tiny_midi_dir, 0.16, 0)
    assert skipped == [] and calls == {"read": 3, "explain": 3}  # b, c, d: read once, a: no pass
    again, _ = A.folder_explain(model_dir, tiny_midi_dir, 0.17, 0)
    assert A.folder_rules(model_dir, tiny_midi_dir, 0.17, 0) == rules and calls["explain"] == 3
    monkeypatch.undo()
    model, tok = A.load_model(model_dir)
    pieces = [real_read(tiny_midi_dir / f, config=tok.config) for f in ("a.mid", "b.mid", "c.mid", "d.mid")]
    # the per-note rule results line up with the folder table's notes (the leads' pairing), file by file
    from smu_explain.baselines import piece_rule_table

    per_note = A.folder_rule_table(model_dir, tiny_midi_dir, 0.16, 0)
    one_by_one = [piece_rule_table(tok, p, ratio=1 / 6, seed=0, max_len=model.config.max_len) for p in pieces]
    assert np.array_equal(per_note["copy_neighbour"], np.concatenate([t["copy_neighbour"] for t in one_by_one]))
    assert len(per_note["copy_neighbour"]) == len(table)
    leads = A.folder_rule_leads(model_dir, tiny_midi_dir, 0.16, 0, 40, table)
    assert set(leads) == set(tok.attributes) and all(lo <= hi for lo, hi in leads.values())
    for f, piece in zip(("a.mid", "b.mid", "c.mid", "d.mid"), pieces, strict=False):
        ref = real_explain(model, tok, piece, ratio=0.16, seed=0, top_k=1)
        got = table[table["file"] == f].drop(columns="file").reset_index(drop=True)
        ref = ref.drop(columns=[c for c in ref.columns if c.startswith("topk_")])
        pd.testing.assert_frame_equal(got, ref, check_dtype=False)
        assert (again[again["file"] == f]["picked"].to_numpy() ==
                real_explain(model, tok, piece, ratio=0.17, seed=0, top_k=1)["picked"].to_numpy()).all()
    assert rules == piece_rules(tok, pieces, ratio=0.16, seed=0, max_len=model.config.max_len)


def test_models_with_different_tokens_are_each_judged_against_their_own_rules(models, tmp_path, tiny_midi_dir,
                                                                             monkeypatch):
    """A model whose tokens differ (here velocity is one of its attributes) is not judged against the
    rules computed on the other model's tokens: one chart and one rules set per model, in the report too."""
    import torch

    from smu_explain.model import MidiBert, ModelConfig
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    torch.manual_seed(3)
    tok = Tokenizer(TokenizerConfig(use_velocity=True))
    vel = tmp_path / "velocity-model"
    save_checkpoint(vel, MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes)),
                    extra={"tokenizer": tok.config.to_dict()})
    at = run_page((models[0], vel))
    assert not at.exception, at.exception
    comp = at.session_state["smu_compare"]
    by_model = comp["rules_by_model"]
    assert comp["rules"] is None and set(by_model) == {"model-one", "velocity-model"}
    attrs = {n: set(next(iter(r.values()))) for n, r in by_model.items()}
    assert "velocity" in attrs["velocity-model"] and "velocity" not in attrs["model-one"]
    assert any("each is judged against the rules on its own tokens" in c.value for c in at.caption)
    # each model's sentence names only its own attributes
    assert "velocity" in comp["rules_text"]["velocity-model"] and "velocity" not in comp["rules_text"]["model-one"]
    # the report says the same and draws one figure per model, each with its own rules' marks
    rep, made = run_report(monkeypatch, {"smu_compare": comp})
    assert not rep.exception, rep.exception
    [doc] = made
    assert "each is judged against the rules on its own tokens" in doc
    assert "model-one: per attribute, with the no-model rules" in doc
    assert "velocity-model: per attribute, with the no-model rules" in doc
    # the folder tab does the same
    at.text_input(key="compare_folder").set_value(str(tiny_midi_dir)).run()
    at.button(key="compare_eval").click().run()
    assert not at.exception, at.exception
    folder = at.session_state["smu_compare"]["folder"]
    assert folder["rules"] is None and set(folder["rules_by_model"]) == {"model-one", "velocity-model"}


def test_models_with_the_same_tokens_share_one_rules_set(models):
    at = run_page(models)
    comp = at.session_state["smu_compare"]
    assert comp["rules"] is not None
    assert all(r == comp["rules"] for r in comp["rules_by_model"].values())
