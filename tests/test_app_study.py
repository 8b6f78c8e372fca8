"""Study page (AppTest): stage status before the study ends, the summary after."""

import json

from app_helpers import count_calls, page, texts
from streamlit.testing.v1 import AppTest


def copy_page(tmp_path):
    """The page reads docs/ next to its own folder: run a copy of it inside tmp_path."""
    script = tmp_path / "pages" / "study.py"
    script.parent.mkdir()
    with open(page("study.py")) as fh:
        script.write_text(fh.read())
    return str(script)


def test_partial_study_lists_stages(tmp_path):
    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    (d / "data.json").write_text(json.dumps({"cost": {"wall_s": 120.0, "tokens": 0, "peak_rss_mb": 700.0}}))
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("has not finished yet" in i.value for i in at.info)
    table = at.dataframe[0].value
    row = table.set_index("stage").loc["data"]
    assert row["status"] == "done" and row["wall (min)"] == "2"
    assert (table["status"] == "to do").sum() == len(table) - 1
    assert row["tokens"] == "0" and table.set_index("stage").drop("data")["wall (min)"].eq("-").all()  # no "None"
    assert at.metric[0].value == f"1 of {len(table)}"


def test_partial_study_shows_results_so_far_and_the_earlier_run(tmp_path):
    """While the study runs: finished pre-training stages show recovery beside the no-model
    rules; the earlier run (2026-11-30) stays reachable in an expander."""
    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    acc = {"bar": 0.99, "position": 0.81, "pitch": 0.30, "duration": 0.36}
    rules = {"most_frequent": {"bar": 0.95, "position": 0.07, "pitch": 0.05, "duration": 0.16},
             "copy_neighbour": {"bar": 0.90, "position": 0.50, "pitch": 0.05, "duration": 0.20},
             "window_mode": {"bar": 0.95, "position": 0.17, "pitch": 0.09, "duration": 0.22}}
    (d / "data.json").write_text(json.dumps({"preset": "cpu", "cost": {"wall_s": 60.0, "tokens": 0}}))
    (d / "pretrain-random-s0-1of1.json").write_text(json.dumps({
        "preset": "cpu", "cost": {"wall_s": 600.0, "tokens": 1, "steps": 3000},
        "result": {"strategy": "random", "seed": 0, "recovery_accuracy": acc, "rules": rules,
                   "beats_rules": {a: True for a in acc}, "total": {"steps": 3000}}}))
    runs = [{"task": "melody", "model": m, "encoder": e, "mask_ft": True, "fraction": 1.0, "seed": s,
             "pretrain_seed": 0 if m != "none" else None, "test_acc": a + 0.01 * s, "test_macro_f1": a - 0.1}
            for m, e, a in (("random", "random-s0", 0.82), ("none", "none", 0.80)) for s in (0, 1)]
    (d / "finetune-melody.json").write_text(json.dumps({
        "preset": "cpu", "cost": {"wall_s": 900.0, "tokens": 1, "steps": 600},
        "result": {"task": "melody", "classes": ["melody", "bridge", "piano"], "runs": runs,
                   "majority": {"class": 2, "rate": 0.643}, "budget_steps": 600}}))
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    assert "Results so far" in [h.value for h in at.subheader]
    t = texts(at)
    assert "Did the encoders learn?" in t and "random-s0 (step 3000)" in t and "**0.810**" in t
    # a fine-tuning task that finished shows its test accuracy beside the majority class
    assert "| random masks, mask-FT on | 82.5 ± 0.7 |" in t and "| majority class (no model) | 64.3 |" in t
    assert "rule: copy the nearest neighbour" in t
    assert any("Earlier runs" in e.label for e in at.expander)
    assert "Earlier run: 2026-11-30 (preset cpu-v1)" in t


def test_finished_study_shows_the_summary(tmp_path):
    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"summary": ["Gain: +1.0 points.", "Cost: 2 h.", "Errs: velocity."]}))
    (tmp_path / "docs" / "RESULTS.md").write_text("# Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    t = texts(at)
    assert "Gain: +1.0 points." in t and "Errs: velocity." in t
    assert not at.info
    # the earlier run of the (default) cpu preset stays reachable as a dated section
    assert any("Earlier runs" in e.label for e in at.expander)
    assert "Earlier run: 2026-11-30 (preset cpu-v1)" in t


def test_finished_study_page_shows_tables_and_masker_figures(tmp_path, tiny_study):
    import shutil

    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    shutil.copy(tiny_study["paths"].results_dir / "results.json", d / "results.json")
    results = json.loads((d / "results.json").read_text())
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    t = texts(at)
    for line in results["summary"]:
        assert line in t
    # pre-training recovery beside the no-model rules, then the accuracy table: one row per
    # (model, mask fine-tuning) and the majority class, one column per task
    pre = at.dataframe[0].value
    assert pre.iloc[0, 0] == "rule: most frequent value" and list(pre.columns)[-1] == "beats every rule"
    acc = at.dataframe[1].value
    assert list(acc.columns) == ["model"] + results["tasks"]
    assert len(acc) == 7 and acc.iloc[-1, 0] == "majority class (no model)"
    charts = [c for c in at.get("plotly_chart")]
    # data efficiency + Spearman + freeze history + by class + 3 examples
    assert len(charts) == 1 + 3 + len(results["analysis"]["examples"])
    heads = [h.value for h in at.subheader]
    assert heads == ["In three lines", "Did the encoders learn? Pre-training recovery vs the no-model rules",
                     "Test accuracy (%), mean ± std over seeds", "Data efficiency",
                     "What the masker picks and freezes"]
    assert "Frozen notes from real pieces" in t


def test_the_study_figures_are_built_once_per_results_file(tmp_path, tiny_study, monkeypatch):
    """A rerun of the Study page (any widget) does not rebuild the study's figures; a new
    results.json does. The Report page shares the same figures."""
    import os
    import shutil

    from smu_explain import study

    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    shutil.copy(tiny_study["paths"].results_dir / "results.json", d / "results.json")
    built = count_calls(monkeypatch, study, "analysis_figures")
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    n_charts = len(at.get("plotly_chart"))
    at.run()
    at.run()
    assert len(built) == 1 and len(at.get("plotly_chart")) == n_charts
    st_ = (d / "results.json").stat()
    os.utime(d / "results.json", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))  # a new study written
    at.run()
    assert not at.exception, at.exception
    assert len(built) == 2


def test_study_page_shows_what_the_masker_picks(tmp_path):
    """docs/masker_picks.json (scripts/masker_picks.py): the generated sentence, the control's and
    the per-class table of the chosen set; text from the file escaped; a broken file is a warning."""
    from app_helpers import ROOT

    docs = tmp_path / "docs"
    docs.mkdir()
    data = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    (docs / "masker_picks.json").write_text(json.dumps(data))
    script = copy_page(tmp_path)
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert "What the masker picks, in music's words" in [h.value for h in at.subheader]
    t = texts(at).replace("\\", "")
    assert data["results"]["all"]["sentence"] in t and data["control"]["sentence"] in t
    table = next(d.value for d in at.dataframe if "score vs same duration x register" in d.value.columns)
    assert len(table) == sum(len(v) for v in data["results"]["all"]["columns"].values())
    assert "root accuracy 0.732" in t
    at.selectbox(key="study_picks_set").set_value("asap").run()
    assert not at.exception and data["results"]["asap"]["sentence"] in texts(at).replace("\\", "")
    # whether it learned them: the verdict the doc stands by (random heads of the model's own encoder),
    # not the one control head; a file from before the random heads: the comparison with the control;
    # from before that: no heading
    assert "Learned, or a random read-out?" in t and data["null"]["sentence"] in t
    assert data["comparison"]["sentence"] not in t
    null = data.pop("null")
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    assert data["comparison"]["sentence"] in texts(at).replace("\\", "")
    assert null["sentence"] not in texts(at).replace("\\", "")
    comparison = data.pop("comparison")
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception and "Learned, or a random read-out?" not in texts(at)
    assert data["control"]["sentence"] in texts(at).replace("\\", "")
    data["comparison"] = {**comparison, "sentence": "Evil <b>bold</b> *y*"}
    # hostile text in the file is shown as text
    data["results"]["all"]["sentence"] = "Evil [link](javascript:alert(1)) <b>bold</b> *x*"
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception, at.exception
    md = next(m.value for m in at.markdown if "Evil" in m.value)
    assert "\\[link\\]" in md and "\\<b\\>" in md and "\\*x\\*" in md
    md = next(m.value for m in at.markdown if "*y" in m.value)
    assert "\\<b\\>" in md and "\\*y\\*" in md
    (docs / "masker_picks.json").write_text("{not json")
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception and any("cannot be read" in w.value for w in at.warning)


ONE_UPDATE = [{"epoch": 0, "step": 1791, "n_notes": 1000, "n_frozen": 270, "frozen_frac": 0.27,
               "jaccard_prev": None, "kept_from_prev": None, "jaccard_last": 1.0}]


def example(pitch: int = 60) -> dict:
    """A frozen-note example as the study's analysis writes it (``analysis["examples"][i]``)."""
    notes = [{"note": i, "pitch": 60 + i, "velocity": 64, "track": 0, "onset_q": 40.0 + i, "duration_q": 1.0,
              "bar": 10, "beat": float(i % 4), "score": i / 8, "frozen": 60 + i == pitch, "picked": i == 5}
             for i in range(8)]
    return {"piece": "emopia/Q1_x_0", "source": "emopia", "note": pitch - 60, "onset_q": 40.0 + pitch - 60,
            "duration_q": 1.0, "pitch": pitch, "context": {"notes": notes, "bar_starts_q": [40.0, 44.0],
                                                            "track_names": ["piano"]}}


def analysis_page(tmp_path, **analysis):
    """The Study page on a finished study whose masker analysis is ``analysis``."""
    d = tmp_path / "docs" / "study"
    d.mkdir(parents=True)
    ana = {"ratio": 0.15, "freeze_top": 0.3, "n_notes": 1000, "pieces_per_source": {"emopia": 2}, "sources": {},
           "by_class": {}, **analysis}
    (d / "results.json").write_text(json.dumps({"summary": ["Gain: +0.4 points."], "analysis": ana}))
    at = AppTest.from_file(copy_page(tmp_path), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_one_freeze_book_update_is_said_in_words_not_drawn(tmp_path):
    """One freeze-book update is one point: the page says it (epoch, step, frozen share) instead of a
    chart of one dot on an axis from epoch -1 to 1."""
    at = analysis_page(tmp_path, freeze_history=ONE_UPDATE)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert charts and not any("the frozen set over training" in spec for spec in charts)
    assert ("**The frozen set over training**: one freeze-book update in this run (after epoch 0, step 1791): "
            "it froze 27% of the training notes; no later update to compare it with.") in texts(at)


def test_the_frozen_note_rolls_say_what_their_marks_mean(tmp_path):
    """The small rolls of frozen notes have no legend: a caption says what colour, the red outline,
    solid red and grey hatching mean."""
    at = analysis_page(tmp_path, examples=[example(60), example(67)],
                       examples_frozen_by="the freeze book after epoch 0 (step 1791), training pieces")
    assert "**Frozen notes from real pieces**" in texts(at)
    [caption] = [c.value for c in at.caption if "Red outline" in c.value]
    for words in ("masker score", "dark purple low to yellow high", "picked for masking at 15%", "solid red",
                  "Grey hatched: frozen", "the arrow"):
        assert words in caption, words


def test_study_page_shows_the_confirmation_on_new_pieces(tmp_path):
    """docs/masker_picks_confirm.json (scripts/masker_picks_confirm.py): its outcome beside the random-head
    verdict when it re-tests that very result (model, pieces, hypotheses); not when it checks another run;
    a broken file is a warning; hostile text is shown as text."""
    from app_helpers import ROOT

    from smu_explain.picks_null import confirms

    docs = tmp_path / "docs"
    docs.mkdir()
    data = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    confirm = json.loads((ROOT / "docs" / "masker_picks_confirm.json").read_text())
    (docs / "masker_picks.json").write_text(json.dumps(data))
    (docs / "masker_picks_confirm.json").write_text(json.dumps(confirm))
    script = copy_page(tmp_path)
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception, at.exception
    md = next(m.value for m in at.markdown if "Confirmed on new pieces?" in m.value)
    assert confirm["outcome"][:60] in md.replace("\\", "")
    # a confirmation of other pieces, another model or other hypotheses is not this result's
    for change in ({"exploratory": {**confirm["exploratory"], "pieces": ["x"]}},
                   {"exploratory": {**confirm["exploratory"], "model": "demo-random"}},
                   {"hypotheses": confirm["hypotheses"][1:]}):
        assert not confirms({**confirm, **change}, data["null"], data["results"]["all"]["pieces"])
        (docs / "masker_picks_confirm.json").write_text(json.dumps({**confirm, **change}))
        at = AppTest.from_file(script, default_timeout=60).run()
        assert not at.exception and "Confirmed on new pieces?" not in texts(at)
    for junk in (None, [], {"rule": 1}, {**confirm, "hypotheses": [1]}):
        assert not confirms(junk, data["null"], data["results"]["all"]["pieces"])
    (docs / "masker_picks_confirm.json").write_text(json.dumps({**confirm, "outcome": "Evil <b>x</b> *z*"}))
    at = AppTest.from_file(script, default_timeout=60).run()
    md = next(m.value for m in at.markdown if "Evil" in m.value)
    assert "\\<b\\>" in md and "\\*z\\*" in md
    (docs / "masker_picks_confirm.json").write_text("{not json")
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception and any("cannot be read" in w.value for w in at.warning)
    assert data["null"]["sentence"] in texts(at).replace("\\", "")
