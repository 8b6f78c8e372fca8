"""scripts/masker_picks_confirm.py's rule (hypotheses, new pieces, verdict, page) and scripts/masker_picks.py's
line pointing to it. No data root, no model."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from smu_explain.corpora import PieceRef

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def confirm():
    return _load("masker_picks_confirm")


@pytest.fixture(scope="module")
def picks_script():
    return _load("masker_picks")


def _row(column, cls, trained, median, p, k=24):
    return {"column": column, "class": cls, "phrase": f"{cls} notes", "vs": "same duration x register",
            "trained_sd": trained, "random_median": median, "random_lo": median - 0.3, "random_hi": median + 0.3,
            "random_min": median - 0.5, "random_max": median + 0.5, "p": p, "p_corrected": min(1.0, k * p), "n": 1000}


def _null(rows, k=None):
    return {"model": "m", "n_heads": 1000, "alpha": 0.05, "min_sd": 0.2, "k": k or len(rows), "classes": rows}


def test_the_hypotheses_are_the_exploratory_classes_below_the_threshold_with_their_side_of_the_median(confirm):
    """p < 0.05 only (0.05 itself is out), in the run's order; the direction is measured from the random heads'
    median, not from 0."""
    null = _null([_row("voice_position", "inner", -0.4, 0.0, 0.003), _row("harmony", "pedal", 0.3, 0.0, 0.2),
                  _row("metric", "beat", -0.1, -0.5, 0.049), _row("repeated", "repeated", -0.2, 0.0, 0.05)])
    hyps = confirm.hypotheses(null)
    assert [(h["column"], h["class"], h["direction"]) for h in hyps] == [("voice_position", "inner", "below"),
                                                                          ("metric", "beat", "above")]
    assert hyps[0]["exploratory"] == pytest.approx({"trained_sd": -0.4, "random_median": 0.0, "p": 0.003,
                                                    "p_corrected": 0.072})
    assert confirm.hypotheses(null, p_below=0.01)[0]["class"] == "inner"


def _ref(name, group, path=None):
    return PieceRef(Path(path or f"/data/{name}.mid"), name, group, name.split("/")[0])


def test_the_new_pieces_share_no_song_or_work_with_the_used_or_the_trained_ones(confirm):
    """A group (song / work) that holds a used piece or a training file is left out whole; the used names are
    looked up in the whole corpus when the pool is part of it; a used name that is nowhere is an error."""
    corpus = [_ref("pop909/001", "001"), _ref("pop909/002", "002"), _ref("pop909/003", "003"),
              _ref("pop909/004", "004"), _ref("pop909/005", "005"), _ref("pop909/005b", "005")]
    pool = corpus[1:]  # 001 is a training song outside the pool
    got = confirm.new_pool(pool, ["pop909/002", "pop909/001"], ["/data/pop909/004.mid", "/data/pop909/001.mid"],
                           used_from=corpus)
    assert [r.name for r in got] == ["pop909/003", "pop909/005", "pop909/005b"]
    got = confirm.new_pool(pool, ["pop909/005"], [], used_from=corpus)
    assert [r.name for r in got] == ["pop909/002", "pop909/003", "pop909/004"]  # 005b: the same song as 005
    with pytest.raises(ValueError, match="not among"):
        confirm.new_pool(pool, ["pop909/001"], [])
    assert confirm.training_paths({"training_data": {"paths": ["<data_root>/pop909/a.mid", "<repo>/s/b.mid"]}},
                                  "/d", "/r") == ["/d/pop909/a.mid", "/r/s/b.mid"]


def test_confirmed_needs_the_corrected_p_the_same_side_and_the_bound(confirm):
    ok = dict(alpha=0.05, min_sd=0.2)
    assert confirm.decide(-0.5, 0.0, 0.01, "below", **ok)["confirmed"]
    assert not confirm.decide(-0.5, 0.0, 0.05, "below", **ok)["confirmed"]  # corrected p not below alpha
    flipped = confirm.decide(0.5, 0.0, 0.01, "below", **ok)
    assert not flipped["confirmed"] and not flipped["same_direction"] and flipped["side"] == "above"
    small = confirm.decide(-0.15, 0.0, 0.01, "below", **ok)
    assert not small["confirmed"] and not small["beyond_bound"] and small["distance_sd"] == pytest.approx(0.15)
    assert confirm.decide(0.1, 0.35, 0.01, "below", **ok)["confirmed"]  # measured from the median, not from 0


def test_judge_and_the_page(confirm):
    """Each hypothesis gets the confirmatory numbers and verdict; one the null did not test is not confirmed; the
    page states the rule before the result and lists every piece."""
    hyps = confirm.hypotheses(_null([_row("voice_position", "inner", -0.4, 0.0, 0.003),
                                     _row("harmony", "pedal", 0.3, 0.0, 0.02),
                                     _row("duration", ">= 1/2 (>= 2 q)", 1.4, 0.0, 0.001)]))
    rows = [_row("voice_position", "inner", -0.45, 0.01, 0.001, k=3), _row("harmony", "pedal", -0.3, 0.0, 0.001, k=3)]
    null = {**_null(rows, k=3), "untested": [["duration", ">= 1/2 (>= 2 q)"]], "n_pieces": 4, "n_notes": 100,
            "random_score_sd": {"median": 0.05}, "trained_score_sd": 0.25, "trained_head_gap": 1e-8}
    judged = confirm.judge(hyps, null)
    assert [h["confirmed"] for h in judged] == [True, False, False]
    assert judged[1]["side"] == "below" and not judged[1]["same_direction"] and judged[1]["significant"]
    assert judged[2]["tested"] is False
    doc = {"model": "m", "seconds": 60, "threads": 1, "hypotheses": judged, "null": null, "n_pieces": 4,
           "n_notes": 100, "pieces": {"pop909": ["pop909/1", "pop909/2"], "asap": ["asap/a", "asap/b"]},
           "exploratory": {"k": 24, "n_heads": 1000, "pieces": ["x"] * 60},
           "pools": {"pop909": {"size": 10}, "asap": {"size": 20}},
           "rule": {"preregistered": "abc1234", "hypothesis_p": 0.05, "seed": 1, "trained_models": ["m"],
                    "ratio": 0.15, "n_boot": 10, "n_heads": 1000, "init": "torch", "head_seed": 1, "alpha": 0.05,
                    "min_sd": 0.2}}
    doc["outcome"] = confirm.outcome(doc)
    assert doc["outcome"].startswith("On 4 new pieces (2 POP909 + 2 ASAP), 1 of the 3 pre-registered hypotheses")
    assert "not confirmed: pedal notes, >= 1/2 (>= 2 q) notes" in doc["outcome"]
    md = confirm.render(doc)
    assert md.index("## The rule, fixed before running") < md.index("## Result") < md.index(doc["outcome"])
    assert "`abc1234`" in md and "`asap/b`" in md and "too few notes" in md
    assert "**inner-voice notes (neither the lowest" in md and "**confirmed**" in md


def test_masker_picks_points_to_the_confirmation_of_its_own_run_only(picks_script):
    """The line appears when the confirmation's model, pieces and hypotheses are this run's, and not otherwise."""
    null = _null([_row("voice_position", "inner", -0.4, 0.0, 0.003), _row("harmony", "pedal", 0.3, 0.0, 0.2)])
    conf = {"exploratory": {"model": "m", "pieces": ["a", "b"]}, "rule": {"hypothesis_p": 0.05},
            "hypotheses": [{"column": "voice_position", "class": "inner"}], "outcome": "On 2 new pieces, it held."}
    line = picks_script.confirm_line(conf, null, ["a", "b"])
    assert len(line) == 2 and "MASKER_PICKS_CONFIRM.md" in line[0] and line[0].endswith("On 2 new pieces, it held.")
    assert picks_script.confirm_line(conf, null, ["a", "c"]) == []
    assert picks_script.confirm_line(None, null, ["a", "b"]) == []
    other = copy.deepcopy(conf)
    other["hypotheses"].append({"column": "harmony", "class": "pedal"})
    assert picks_script.confirm_line(other, null, ["a", "b"]) == []


def test_the_committed_page_is_what_the_renderer_makes_of_the_stored_numbers(picks_script, monkeypatch):
    """docs/MASKER_PICKS.md = render(docs/masker_picks.json, docs/masker_picks_confirm.json): a regeneration keeps
    the line pointing to the confirmation, and the line is there exactly when the confirmation is."""
    doc = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    path = ROOT / "docs" / "masker_picks_confirm.json"
    conf = json.loads(path.read_text()) if path.exists() else None
    monkeypatch.setattr(sys, "argv", ["scripts/masker_picks.py"])
    args = argparse.Namespace(threads=doc["threads"], n_boot=doc["results"]["all"]["n_boot"], seed=doc["seed"])
    md = picks_script.render(doc["results"], args, doc["chord_check"], doc["seconds"], doc["control"],
                             doc["comparison"], doc.get("null"), conf)

    def body(text):  # the command line the page was made with is not in the JSON
        return [line for line in text.splitlines() if not line.startswith("Made by `python scripts/masker_picks.py")]

    assert body(md) == body((ROOT / "docs" / "MASKER_PICKS.md").read_text())
    assert ("MASKER_PICKS_CONFIRM.md" in md) == (conf is not None)
    if conf is not None:
        assert conf["outcome"] in md
