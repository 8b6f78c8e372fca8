"""verdict.py: paired bootstrap over notes / pieces, the verdict dict and its sentence (synthetic data)."""

import json

import numpy as np
import pandas as pd
import pytest

from smu_explain import verdict as V


def tables(n=600, p_a=(0.9, 0.4), p_b=(0.9, 0.4), seed=0, files=None):
    """Two paired explain tables (bar, pitch) with the given accuracies; a ``file`` column when
    ``files`` is given (notes split evenly)."""
    rng = np.random.default_rng(seed)
    out = []
    for ps in (p_a, p_b):
        t = pd.DataFrame({"pitch": rng.integers(40, 80, n), "onset_q": np.arange(n, dtype=float)})
        for attr, p in zip(("bar", "pitch"), ps, strict=False):
            t[f"correct_{attr}"] = rng.random(n) < p
        out.append(t)
    out[0]["pitch"] = out[1]["pitch"]
    if files:
        for t in out:
            t.insert(0, "file", np.repeat([f"f{i}.mid" for i in range(files)], n // files))
    return out


def test_an_interval_above_zero_names_the_winner():
    a, b = tables(p_a=(0.9, 0.3), p_b=(0.9, 0.7))
    v = V.compare_tables(a, b, ["adv", "rnd"], n_boot=500)
    assert v["winner"] == "rnd" and v["mean"]["lo"] > 0
    assert v["attributes"]["pitch"]["winner"] == "rnd"
    text = V.verdict_sentence(v)
    assert text.startswith("Under random masks: rnd recovers more than adv, by ")
    assert "95% interval" in text and "paired bootstrap over 600 notes" in text
    # the other way round: the interval below zero names A
    v2 = V.compare_tables(b, a, ["rnd", "adv"], n_boot=500)
    assert v2["winner"] == "rnd" and v2["mean"]["hi"] < 0
    assert V.verdict_sentence(v2).startswith("Under random masks: rnd recovers more than adv")


def test_an_interval_with_zero_says_no_clear_difference():
    a, b = tables(n=200, p_a=(0.9, 0.5), p_b=(0.9, 0.5), seed=3)
    # identical tables: every difference 0 (the interval is [0, 0] and includes 0)
    same = V.compare_tables(a, a.copy(), ["x", "y"], n_boot=200)
    assert same["winner"] is None and same["mean"]["diff"] == 0
    assert "no clear difference between x and y" in V.verdict_sentence(same)
    v = V.compare_tables(a, b, ["x", "y"], n_boot=500)
    if v["mean"]["lo"] <= 0 <= v["mean"]["hi"]:
        assert v["winner"] is None and "no clear difference" in V.verdict_sentence(v)
    else:  # a draw of equal models may differ; then a winner is named, as the rule says
        assert v["winner"] is not None


def test_deterministic_given_a_seed_and_intervals_hold_the_estimate():
    a, b = tables(p_a=(0.8, 0.45), p_b=(0.85, 0.5), files=12)
    for unit in (None, "file"):
        v1 = V.compare_tables(a, b, ["a", "b"], unit=unit, n_boot=300, seed=7)
        v2 = V.compare_tables(a, b, ["a", "b"], unit=unit, n_boot=300, seed=7)
        v3 = V.compare_tables(a, b, ["a", "b"], unit=unit, n_boot=300, seed=8)
        assert v1 == v2
        assert v1["mean"]["lo"] != v3["mean"]["lo"] or v1["mean"]["hi"] != v3["mean"]["hi"]
        for x in [*v1["attributes"].values(), v1["mean"]]:
            assert x["lo"] <= x["diff"] <= x["hi"]
            assert x["diff"] == pytest.approx(x["acc_b"] - x["acc_a"])
    assert V.compare_tables(a, b, ["a", "b"], unit="file", n_boot=50)["n_units"] == 12


def test_pieces_are_the_units_of_a_folder_and_the_estimate_is_the_pooled_difference():
    a, b = tables(n=400, files=4)
    d, n = V.unit_differences(a, b, ["bar", "pitch"], unit="file")
    assert d.shape == n.shape == (4, 2) and (n == 100).all()
    v = V.compare_tables(a, b, ["a", "b"], unit="file", n_boot=100)
    pooled = b["correct_pitch"].mean() - a["correct_pitch"].mean()
    assert v["attributes"]["pitch"]["diff"] == pytest.approx(pooled)
    assert "over 4 pieces, 400 notes" in V.verdict_sentence(v)


def test_bootstrap_of_constant_differences_is_that_constant():
    d = np.ones((50, 1))
    res = V.paired_bootstrap(d, np.ones((50, 1)), n_boot=100, seed=0)
    assert res["lo"][0] == res["hi"][0] == res["estimate"][0] == 1.0
    empty = V.paired_bootstrap(np.zeros((0, 2)), np.zeros((0, 2)), n_boot=10)
    assert np.isnan(empty["lo"]).all()


def test_pick_set_follows_the_trained_maskers():
    a, b = tables(n=10)
    a["picked"] = [True] * 3 + [False] * 7
    b["picked"] = [False] * 7 + [True] * 3
    m, text = V.pick_set(a, b, ["adv", "rnd"], [True, False])
    assert m.tolist() == a["picked"].tolist() and "{a}'s masker" in text
    m, _ = V.pick_set(a, b, ["adv", "adv2"], [True, True])
    assert m.sum() == 6
    m, why = V.pick_set(a, b, ["r1", "r2"], [False, False])
    assert m is None and "neither" in why
    v = V.compare_tables(a, b, ["adv", "rnd"], notes=a["picked"].to_numpy(), n_boot=50)
    assert v["n_notes"] == 3
    s = V.verdict_sentence(v, label="Under the masker's picks", set_text=text)
    assert s.startswith("Under the masker's picks (the notes adv's masker would hide")


def test_unpaired_tables_give_no_verdict_and_names_are_escaped():
    a, b = tables(n=20)
    v = V.compare_tables(a, b.iloc[:10], ["a", "b"])
    assert v["problem"] and v["mean"] is None
    assert "no verdict" in V.verdict_sentence(v)
    a2, b2 = tables(p_a=(0.9, 0.2), p_b=(0.9, 0.8))
    v = V.compare_tables(a2, b2, ["<a>", "[b](x)"], n_boot=50)
    s = V.verdict_sentence(v, esc=lambda x: f"«{x}»")
    assert "«[b](x)» recovers more than «<a>»" in s


def test_model_and_study_facts_and_the_context_sentence(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model": {"n_layers": 2, "d_model": 64}, "training": {"step": 700, "epoch": 3},
        "strategy": {"name": "random"}, "training_data": {"paths": ["a", "b"]}}))
    header = json.dumps({"w": {"dtype": "F16", "shape": [10, 20], "data_offsets": [0, 400]},
                         "__metadata__": {"x": "y"}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 400)
    f = V.model_facts(folder)
    assert f == {"name": "m", "strategy": "random", "steps": 700, "epochs": 3, "params": 200, "layers": 2,
                 "width": 64, "train_files": 2}
    assert V.model_facts(tmp_path / "missing")["strategy"] is None
    study = V.study_facts({"paired": {"overall": {"mean_diff": 0.004, "t_p": 0.72, "n": 16, "significant": False},
                                      "pretrain_seeds": 2},
                           "model": {"n_params": 896384, "n_layers": 4, "d_model": 128},
                           "budget": {"pretrain_steps": 3000}, "tasks": ["melody", "emotion"]})
    assert V.study_result_text(study) == "not measurably: +0.4 points, p = 0.72"
    # with the interval over pre-training seeds (the claim's units), that decides, and the pairs' p goes
    seeds = {"n_units": 2, "mean_diff": 0.004, "lo": -0.215, "hi": 0.223, "excludes_zero": False}
    raw = {"paired": {"overall": {"mean_diff": 0.004, "t_p": 0.001, "n": 16, "significant": True},
                      "by_pretrain_seed": seeds}}
    assert V.study_result_text(V.study_facts(raw)) == (
        "not measurably: +0.4 points, 95% interval over 2 pre-training seeds -21.5 to +22.3")
    raw["paired"]["by_pretrain_seed"] = dict(seeds, mean_diff=-0.05, lo=-0.07, hi=-0.03, n_units=5,
                                             excludes_zero=True)
    assert V.study_result_text(V.study_facts(raw)).startswith("measurably worse: -5.0 points, 95% interval over 5")
    g = dict(f, name="adv", strategy="adversarial", steps=500)
    text = V.context_sentence([g, f], study)
    assert "0.9 M-parameter encoders" in text and "3,000 pre-training steps" in text
    assert "m was trained longest (700 steps" in text and "home ground" in text
    assert V.study_facts({}) is None
    assert V.headline({"a": {"bar": 0.9, "pitch": 0.4}, "b": {"bar": 0.9, "pitch": 0.5}}) == (
        "b recovers 5.0 points more than a on average (bar +0.0, pitch +10.0)")
    assert V.headline({"a": {"pitch": 0.5}, "b": {"pitch": 0.5}}) == "a and b recover the same share on average (pitch +0.0)"


def test_verdict_is_torch_free():
    import subprocess
    import sys

    code = "import sys, smu_explain.verdict; sys.exit('torch' in sys.modules or 'streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_headline_line_from_the_folders_and_the_study(tmp_path):
    for name, strategy, steps, acc in (("adv", "adversarial", 300, 0.5), ("rnd", "random", 500, 0.6)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model": {}, "training": {"step": steps},
                                                   "strategy": {"name": strategy}}))
        (d / "progress.jsonl").write_text(
            json.dumps({"event": "eval", "metrics": {"val_acc_pitch": acc - 0.1, "val_acc_bar": 0.9}}) + "\n"
            + json.dumps({"event": "eval", "metrics": {"val_acc_pitch": acc, "val_acc_bar": 0.9}}) + "\n")
    assert V.last_recovery(tmp_path / "rnd") == {"pitch": 0.6, "bar": 0.9}
    study = {"params": 900_000, "seeds": 2, "tasks": ["a", "b"], "mean_diff": -0.01, "p": 0.5, "significant": False}
    text = V.headline_line([tmp_path / "adv", tmp_path / "rnd"], study)
    assert text.startswith("In the Study (0.9 M-parameter encoders, 2 seeds per strategy, 2 tasks)")
    assert "did not measurably help after fine-tuning (-1.0 points of test accuracy against random masking, p = 0.5)" \
        in text
    # one run each on its own notes: the values side by side, no winner and no unpaired difference (audit F2)
    assert "the training logs end with adv guessing back 70.0% and rnd 75.0% of the hidden notes" in text
    assert "not a paired comparison and no interval" in text and "more of the hidden notes" not in text
    assert "adv trained 300 steps, rnd 500" in text
    assert V.headline_line([], None).startswith("no study results")


def test_study_direction_follows_the_sign_of_a_significant_result():
    """A significant NEGATIVE Study result reads as worse, never 'did measurably help' (audit F1)."""
    study = {"params": 900_000, "seeds": 2, "tasks": ["a"], "mean_diff": -0.03, "p": 0.01, "significant": True}
    text = V.headline_line([], study)
    assert "help" not in text and "measurably hurt (random masking did better)" in text
    assert V.study_result_text(study) == "measurably worse: -3.0 points, p = 0.01"
    assert "did measurably help" in V.headline_line([], dict(study, mean_diff=0.03))
    assert V.study_result_text(dict(study, mean_diff=0.03)).startswith("measurably better: +3.0")
    assert "did not measurably help" in V.headline_line([], dict(study, significant=False))
    assert [V.study_effect(dict(study, mean_diff=d)) for d in (0.03, -0.03, 0.0)] == ["helped", "hurt", "not"]


@pytest.mark.parametrize("n, files", [(1, None), (3, None), (19, None), (200, 1), (200, 2), (400, 4)])
def test_too_few_units_name_no_winner(n, files):
    """A bootstrap over one unit has zero width and over a few is far too narrow: below MIN_UNITS no
    winner is named, however large the difference (audit F4)."""
    a, b = tables(n=n, p_a=(0.0, 0.0), p_b=(1.0, 1.0), files=files)
    v = V.compare_tables(a, b, ["A", "B"], unit="file" if files else None, n_boot=200)
    unit = "piece" if files else "note"
    assert v["winner"] is None and all(x["winner"] is None for x in v["attributes"].values())
    assert v["undecided"].startswith(f"too few {unit}s to tell")
    text = V.verdict_sentence(v)
    assert f"no verdict: too few {unit}s to tell" in text and "recovers more" not in text and "interval +" not in text
    enough = V.compare_tables(*tables(n=V.MIN_UNITS[unit] * (50 if files else 1), p_a=(0.0, 0.0), p_b=(1.0, 1.0),
                                      files=V.MIN_UNITS["piece"] if files else None),
                              ["A", "B"], unit="file" if files else None, n_boot=200)
    assert enough["winner"] == "B" and enough["undecided"] is None


def test_no_draws_no_verdict_and_the_edge_cases_are_said():
    """n_boot=0 gives no interval, so no winner (not a crash); opposite clear differences under a
    null average are named; an attribute with no pair is said to be left out (audit F17)."""
    a, b = tables(n=200, p_a=(0.0, 0.0), p_b=(1.0, 1.0))
    v = V.compare_tables(a, b, ["A", "B"], n_boot=0)
    assert v["winner"] is None and "no bootstrap draws" in V.verdict_sentence(v)
    x = np.r_[np.ones(100), np.zeros(100)].astype(bool)
    a, b = tables(n=200)
    a["correct_pitch"], a["correct_bar"] = x, ~x
    b["correct_pitch"], b["correct_bar"] = True, False
    text = V.verdict_sentence(V.compare_tables(a, b, ["A", "B"], n_boot=200))
    assert "no clear difference between A and B on average" in text
    assert "yet clearly ahead per attribute: A on bar, B on pitch" in text
    a, b = tables(n=200)
    a["correct_pitch"] = np.nan
    assert "Left out: pitch" in V.verdict_sentence(V.compare_tables(a, b, ["A", "B"], n_boot=100))
