"""Study page (AppTest): stage status before the study ends, the summary after."""

import json

from streamlit.testing.v1 import AppTest

from app_helpers import page, texts


def copy_page(tmp_path):
    """The page reads docs/ next to its own folder: run a copy of it inside tmp_path."""
    script = tmp_path / "pages" / "study.py"
    script.parent.mkdir()
    script.write_text(open(page("study.py")).read())
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
    # accuracy table: one row per (model, mask fine-tuning), one column per task
    acc = at.dataframe[0].value
    assert list(acc.columns) == ["model"] + results["tasks"]
    assert len(acc) == 6
    charts = [c for c in at.get("plotly_chart")]
    # data efficiency + Spearman + freeze history + by class + 3 examples
    assert len(charts) == 1 + 3 + len(results["analysis"]["examples"])
    heads = [h.value for h in at.subheader]
    assert heads == ["In three lines", "Test accuracy (%), mean ± std over seeds", "Data efficiency",
                     "What the masker picks and freezes"]
    assert "Frozen notes from real pieces" in t
