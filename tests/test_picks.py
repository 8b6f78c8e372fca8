"""smu_explain.picks: the per-class measurement of what the masker picks, its intervals and its sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smu_explain import picks, picks_draw
from smu_explain.harmony import LABEL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample_midi").glob("*.mid"))[:4]


def _intervals(result):
    for col, rows in result["columns"].items():
        for row in rows:
            for key, iv in row.items():
                if isinstance(iv, dict):
                    yield col, row["class"], key, iv


def _check_shape(result, n_pieces):
    assert result["n_pieces"] == n_pieces
    assert list(result["columns"]) == list(LABEL_COLUMNS)
    for col, rows in result["columns"].items():
        assert sum(r["n_notes"] for r in rows) == result["n_notes"], col
        for r in rows:
            for m in picks.MEASURES:
                assert {"est", "lo", "hi"} <= set(r[m])
                assert (r[f"{m}_adj"] is None) == (col in picks.CONTROLS)
    json.dumps(result, allow_nan=False)  # JSON, no NaN


def _contains(result):
    for col, cls, key, iv in _intervals(result):
        if iv["est"] is not None and iv["lo"] is not None:
            assert iv["lo"] - 1e-9 <= iv["est"] <= iv["hi"] + 1e-9, (col, cls, key, iv)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from app_helpers import make_model

    from smu_explain.checkpoint import load_checkpoint

    folder = make_model(tmp_path_factory.mktemp("m") / "tiny", seed=0)
    ckpt = load_checkpoint(folder, kind="pretrained")
    return folder, ckpt.encoder.eval(), ckpt.tokenizer


def test_measure_picks_with_a_tiny_model(tiny):
    folder, model, tok = tiny
    pieces = [tok.read(p).subset(np.arange(120)) for p in SAMPLES]
    res = picks.measure_picks(model, tok, pieces, n_boot=200, seed=3, model_name="tiny")
    _check_shape(res, len(pieces))
    _contains(res)
    assert res["pieces"] == [p.name for p in pieces] and res["model"] == "tiny"
    assert 0 < res["overall"]["picked"] < 0.2 and abs(res["overall"]["frozen"] - 0.3) < 0.02
    assert isinstance(res["sentence"], str) and res["sentence"]
    again = picks.measure_picks(model, tok, pieces, n_boot=200, seed=3, model_name="tiny")
    assert json.dumps(again, sort_keys=True) == json.dumps(res, sort_keys=True)  # deterministic given the seed
    table = picks.markdown_table(res)
    assert table.count("\n") == 2 + sum(len(r) for r in res["columns"].values())


def test_measure_folder(tiny):
    folder, _, _ = tiny
    res = picks.measure_folder(folder, SAMPLES[:2], n_boot=50)
    _check_shape(res, 2)
    assert res["model"] == "tiny"


# --------------------------------------------------------------------------- synthetic score tables

DUR = ["< 1/8 (<0.5 q)", ">= 1/2 (>= 2 q)"]
REG = ["C4-B4", "C5-B5"]


def _frames(score_fn, *, passing_long: bool = False, noise: float = 0.0, n_pieces: int = 12, n: int = 200,
            seed: int = 0):
    """Note tables with random labels; ``score_fn(frame) -> scores``; picked/frozen from the score."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_pieces):
        harm = rng.choice(["chord tone", "passing", "neighbour"], n, p=[0.7, 0.2, 0.1])
        u = rng.random(n)
        long = np.where(harm == "passing", u < 0.9, u < 0.3) if passing_long else u < 0.5
        f = pd.DataFrame({
            "bar": np.arange(n) // 8,
            "harmony": harm, "chord_tone": harm == "chord tone",
            "voice_position": rng.choice(["bass", "inner", "top"], n),
            "metric": rng.choice(["downbeat", "off-beat"], n),
            "repeated": rng.random(n) < 0.2, "duration": np.where(long, DUR[1], DUR[0]),
            "register": rng.choice(REG, n), "role": "other"})
        f["score"] = np.clip(score_fn(f) + noise * rng.standard_normal(n), 0, 1)
        order = np.argsort(-f["score"].to_numpy(), kind="stable")
        f["frozen"] = False
        f.loc[order[: int(0.3 * n)], "frozen"] = True
        f["picked"] = False
        f.loc[order[int(0.3 * n): int(0.45 * n)], "picked"] = True
        out.append(f)
    return out


def _by_duration(f):
    return 0.2 + 0.4 * (f["duration"] == DUR[1]).to_numpy()


def test_a_class_clearly_higher_is_named():
    frames = _frames(lambda f: _by_duration(f) + 0.3 * (f["harmony"] == "passing").to_numpy(), noise=0.02)
    res = picks.class_effects(frames, n_boot=300, seed=0)
    row = next(r for r in res["columns"]["harmony"] if r["class"] == "passing")
    assert row["score_adj"]["lo"] > 0.2
    res["model"] = "demo"
    s = picks.summary_sentence(res)
    assert "passing tones" in s and "higher" in s and "no clear pattern" not in s
    assert "bass notes" not in s  # unrelated classes are not named
    _contains(res)


def test_long_notes_do_not_pass_for_harmony():
    """Passing tones are mostly long and the score follows duration only: raw difference, no controlled one."""
    frames = _frames(_by_duration, passing_long=True)
    res = picks.class_effects(frames, n_boot=300, seed=0)
    row = next(r for r in res["columns"]["harmony"] if r["class"] == "passing")
    assert row["score_diff"]["lo"] > 0.1  # raw: passing tones look favoured
    assert abs(row["score_adj"]["est"]) < 1e-9  # within duration x register: nothing
    s = picks.summary_sentence(res)
    assert "no clear pattern beyond duration and register" in s
    assert "passing" not in s and "duration" in s


def test_sentence_changes_with_the_numbers():
    def result(lo, hi, n_notes=500):
        iv = {"est": (lo + hi) / 2, "lo": lo, "hi": hi}
        row = {"class": "off-beat", "n_notes": n_notes, "n_pieces": 10, "share_of_notes": 0.5,
               **{m: iv for m in ("score", "picked", "frozen")},
               **{f"{m}_{k}": iv for m in ("score", "picked", "frozen") for k in ("diff", "adj")}}
        return {"n_pieces": 10, "level": 0.95, "model": "m", "columns": {"metric": [row]},
                "overall": {"score_sd": 0.1}}

    up, down, none = (picks.summary_sentence(result(*x)) for x in [(0.05, 0.09), (-0.09, -0.05), (-0.02, 0.04)])
    assert "off-beat notes" in up and "higher" in up
    assert "off-beat notes" in down and "lower" in down
    assert "off-beat" not in none and "no clear pattern beyond duration and register" in none
    assert len({up, down, none}) == 3
    assert "+0.070" in up and "-0.070" in down  # the numbers come from the result
    few = picks.summary_sentence(result(0.05, 0.09, n_notes=5))
    assert "no clear pattern" in few  # too few notes to name
    assert "no pieces" in picks.summary_sentence({"n_pieces": 0, "columns": {}})


def test_deterministic_and_seeded():
    frames = _frames(_by_duration, noise=0.1, seed=1)
    a = picks.class_effects(frames, n_boot=200, seed=5)
    b = picks.class_effects(frames, n_boot=200, seed=5)
    c = picks.class_effects(frames, n_boot=200, seed=6)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)
    # the point estimates do not depend on the resamples
    est = [iv["est"] for *_, iv in _intervals(a)]
    assert est == [iv["est"] for *_, iv in _intervals(c)]
    _contains(a)
    _contains(c)


def test_one_piece_and_empty():
    res = picks.class_effects(_frames(_by_duration, n_pieces=1), n_boot=50)
    _check_shape(res, 1)
    assert res["resampled"] == "4-bar blocks" and res["n_groups"] == 7  # 200 notes, 8 a bar: 25 bars
    assert "too little music to tell what the masker prefers" in picks.summary_sentence(res)  # 7 blocks
    one = picks.class_effects(_frames(lambda f: _by_duration(f) + 0.3 * (f["metric"] == "off-beat").to_numpy(),
                                      n_pieces=1, n=400, noise=0.02), n_boot=200)  # 50 bars: 13 blocks
    row = next(r for r in one["columns"]["metric"] if r["class"] == "off-beat")
    assert row["score_adj"]["hi"] > row["score_adj"]["lo"]  # blocks give a real interval
    said = picks.summary_sentence(one)  # of two mirrored classes the smaller is named, here the downbeats
    assert "downbeat notes (-0.299; " in said and "lower" in said and "13 spans of 4 bars of 1 piece" in said
    few = picks.class_effects(_frames(_by_duration, n_pieces=3), n_boot=20)
    assert few["resampled"] == "4-bar blocks"
    many = picks.class_effects(_frames(_by_duration, n_pieces=5), n_boot=20)
    assert many["resampled"] == "pieces" and many["n_groups"] == 5
    empty = picks.class_effects([], n_boot=10)
    assert empty["n_pieces"] == 0 and empty["columns"] == {}
    json.dumps(empty, allow_nan=False)


def test_run_command_writes_json_and_markdown(tiny, tmp_path):
    from smu_explain.errors import SMUInputError

    folder, _, _ = tiny
    music = tmp_path / "music"
    music.mkdir()
    for p in SAMPLES[:2]:
        (music / p.name).write_bytes(p.read_bytes())
    (music / "broken.mid").write_bytes(b"not midi")
    (music / "notes.txt").write_text("ignored")
    res = picks.run_command(folder, [music], n_boot=30, json_out=tmp_path / "p.json", markdown_out=tmp_path / "p.md")
    assert res["n_pieces"] == 2 and [s[0] for s in res["skipped"]] == ["broken.mid"]
    capped = picks.measure_folder(folder, sorted(music.glob("*.mid")), n_boot=5, max_notes=5)  # every piece is longer
    assert capped["n_pieces"] == 0 and all("more than the limit of 5 per piece" in why
                                           for name, why in capped["skipped"] if name != "broken.mid")
    assert json.loads((tmp_path / "p.json").read_text())["sentence"] == res["sentence"]
    assert res["sentence"] in (tmp_path / "p.md").read_text()
    assert len(picks.music_files([music], max_pieces=1)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SMUInputError, match="no music files"):
        picks.run_command(folder, [tmp_path / "empty"], n_boot=1)
    with pytest.raises(SMUInputError, match="not found"):
        picks.run_command(folder, [tmp_path / "missing.mid"], n_boot=1)
    with pytest.raises(SMUInputError, match="ratio"):
        picks.run_command(folder, [music], ratio=0)
    # every file refused: an error that says why, and no result file of no pieces
    with pytest.raises(SMUInputError, match=r"none of the 1 music file\(s\) could be measured \(broken.mid: "):
        picks.run_command(folder, [music / "broken.mid"], n_boot=1, json_out=tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()
    # an output that cannot be written is refused before the measurement, and the other is not written
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError) as e:
        picks.run_command(folder, [music], n_boot=1, json_out=tmp_path / "q.json",
                          markdown_out=tmp_path / "afile" / "q.md")
    assert e.value.filename == str(tmp_path / "afile" / "q.md") and not (tmp_path / "q.json").exists()


# --------------------------------------------------------------------------- calibration (audit F10)
# Masker scores that are noise, independent of every label: the sentences must name a class in
# about ALPHA (5%) of runs. Each bound is the most runs a procedure that names a class with
# probability ALPHA would name one in, but for a chance below 1e-6: it cannot flake on a correct one.

def _bound(runs: int, rate: float = 0.05, chance: float = 1e-6) -> int:
    """The smallest x such that a count ~ Binomial(``runs``, ``rate``) exceeds x with probability < ``chance``."""
    from scipy.stats import binom

    x = int(binom.isf(chance, runs, rate))
    while binom.sf(x, runs, rate) >= chance:
        x += 1
    return x


def _noise(f):
    return np.full(len(f), 0.5)  # + noise: a score that depends on no label


def _names_a_class(sentence: str) -> bool:
    return sentence.startswith(("Beyond", "Compared with")) or "e.g. it scores" in sentence


def test_noise_scores_name_a_class_in_about_5_percent_of_runs():
    """One piece of 10 to 16 four-bar blocks (the fewest that may name anything): 200 runs of the
    "What it picks" sentence and of the draw's "What the picked notes have in common"; 100 folders
    of 5 to 8 pieces. Before the correction: 49-91% of one-piece runs named a class."""
    one, draw, folder = 200, 200, 100
    named = {"one": 0, "draw": 0, "folder": 0}
    for r in range(one):
        frames = _frames(_noise, noise=0.2, n_pieces=1, n=8 * 4 * (10 + r % 7), seed=r)
        res = picks.class_effects(frames, n_boot=200, seed=r)
        named["one"] += _names_a_class(picks.summary_sentence(res))
        f = frames[0]
        prof = picks_draw.pick_profile(f, f["picked"].to_numpy(bool), ~f["frozen"].to_numpy(bool), n_boot=200, seed=r)
        named["draw"] += _names_a_class(picks_draw.pick_sentence(prof))
    for r in range(folder):
        res = picks.class_effects(_frames(_noise, noise=0.2, n_pieces=5 + r % 4, n=160, seed=1000 + r),
                                  n_boot=200, seed=r)
        named["folder"] += _names_a_class(picks.summary_sentence(res))
    runs = {"one": one, "draw": draw, "folder": folder}
    for k, n in named.items():
        assert n <= _bound(runs[k]), (k, n, runs[k])  # 27 of 200, 18 of 100
    assert sum(named.values()) <= _bound(sum(runs.values())), named  # 51 of 500: about 10%


def _chord_tones_plus(effect: float, seed: int) -> pd.DataFrame:
    """One piece of 64 bars (16 blocks) whose score is ``effect`` higher on chord tones (noise sd 0.2)."""
    return _frames(lambda f: 0.5 + effect * f["chord_tone"].to_numpy(), noise=0.2, n_pieces=1, n=8 * 64, seed=seed)[0]


def test_a_score_that_follows_chord_tones_names_them_and_little_else():
    """Positive control, 100 runs: chord tones named in nearly every run, voice, metric and repeats
    rarely; in the sentence of the pieces (a score 0.2 higher on chord tones, about 0.95 SD of the
    scores: the whole corrected interval over 16 spans must clear MIN_EFFECT_SD, which at 0.1, about
    0.5 SD, it does in about half the runs) and of the draw (0.3: the picks, 15% of the notes, hold
    fewer chord tones to count than the scores)."""
    runs, unrelated = 100, ("voice_position", "metric", "repeated")
    found = {"score": 0, "score, unrelated": 0, "draw": 0, "draw, unrelated": 0}
    for r in range(runs):
        sig = picks.significant(picks.class_effects([_chord_tones_plus(0.2, 2000 + r)], n_boot=200, seed=r))
        found["score"] += any(s["phrase"] in ("chord tones", "non-chord tones") for s in sig)
        found["score, unrelated"] += any(s["column"] in unrelated for s in sig)
        f = _chord_tones_plus(0.3, 3000 + r)
        prof = picks_draw.pick_profile(f, f["picked"].to_numpy(bool), ~f["frozen"].to_numpy(bool), n_boot=200, seed=r)
        found["draw"] += "more often chord tones" in picks_draw.pick_sentence(prof)
        found["draw, unrelated"] += any(row["clear"] for c in unrelated for row in prof["columns"][c])
    low = runs - _bound(runs)  # a procedure that finds it in 95% of runs finds it in fewer with chance < 1e-6
    assert found["score"] >= low and found["draw"] >= low, found
    assert found["score, unrelated"] <= _bound(runs) and found["draw, unrelated"] <= _bound(runs), found


# --------------------------------------------------------------------------- minimum effect size
# A class is named only when its corrected interval lies wholly beyond MIN_EFFECT_SD (0.2) standard
# deviations of the scores: a real but tiny dependence (the untrained control head's) is not a preference.

def _one_class(lo: float, hi: float, score_sd: float | None) -> dict:
    """A result of 10 pieces with one candidate class, off-beat notes, whose difference is (lo, hi)."""
    iv = {"est": (lo + hi) / 2, "lo": lo, "hi": hi}
    row = {"class": "off-beat", "n_notes": 500, "n_pieces": 10, "share_of_notes": 0.5,
           **{m: iv for m in ("score", "picked", "frozen")},
           **{f"{m}_{k}": iv for m in ("score", "picked", "frozen") for k in ("diff", "adj")}}
    res = {"n_pieces": 10, "level": 0.95, "model": "m", "columns": {"metric": [row]}}
    if score_sd is not None:
        res["overall"] = {"score": 0.5, "picked": 0.1, "frozen": 0.3, "score_sd": score_sd}
    return res


def test_a_difference_that_excludes_zero_but_not_the_bound_is_not_named():
    """The same interval, +0.070 [+0.05, +0.09] (corrected over 10 pieces: about [+0.046, +0.094]):
    named against scores of SD 0.1 (0.46-0.94 SD), not against scores of SD 0.3 (0.15-0.31 SD: the
    interval excludes 0 but reaches inside 0.2 SD); the sentence says so and shows the size in SD."""
    big, small = _one_class(0.05, 0.09, 0.1), _one_class(0.05, 0.09, 0.3)
    wide = picks.named_interval(big["columns"]["metric"][0]["score_adj"], 10, 1)
    assert picks.excludes_zero(wide) and wide["lo"] / 0.3 < 0.2 < wide["lo"] / 0.1
    assert [f["class"] for f in picks.significant(big)] == ["off-beat"]
    assert picks.significant(small) == []  # before the bound: named
    assert picks.MIN_EFFECT_SD == 0.2
    said, unsaid = picks.summary_sentence(big), picks.summary_sentence(small)
    assert "off-beat notes (+0.070; +0.70 SD) higher" in said and "±0.020" in said
    assert "differences not clearly beyond it are not named" in said and "here 1 " not in said
    assert "off-beat" not in unsaid and "no clear pattern beyond duration and register" in unsaid
    assert "beyond ±0.2 SD of its scores (±0.060)" in unsaid and "(here 1 whose intervals exclude zero but reach inside the bound)" in unsaid
    # min_sd=0 is the rule before the bound (an interval that excludes 0), for callers that want it
    assert [f["class"] for f in picks.significant(small, min_sd=0)] == ["off-beat"]
    # no spread stored (a result from before score_sd): no size, so nothing is named, and it says why
    assert picks.significant(_one_class(0.05, 0.09, None)) == []
    assert "no spread of the scores" in picks.summary_sentence(_one_class(0.05, 0.09, None))


def test_a_small_real_effect_is_not_named_a_large_one_is():
    """Control-like: 100 pieces whose score is 0.02 higher on chord tones (noise SD 0.2: about 0.1
    SD), so much music that the corrected interval excludes 0 by far, yet lies inside 0.2 SD: not
    named (before the bound it was). The same pieces with 0.2 higher (about 1 SD): named, with its size."""
    def run(effect):
        frames = _frames(lambda f: 0.5 + effect * f["chord_tone"].to_numpy(), noise=0.2, n_pieces=100, n=500,
                         seed=7)
        res = picks.class_effects(frames, n_boot=200, seed=0)
        res["model"] = "m"
        return res

    def chord(found):
        return [f for f in found if f["phrase"] in ("chord tones", "non-chord tones")]

    small = run(0.02)
    cands = picks.candidates(small)
    ct = chord(cands)[0]
    wide = picks.named_interval(ct["effect"], small["n_groups"], len(cands))
    sd = small["overall"]["score_sd"]
    assert picks.excludes_zero(wide)  # a real difference: far from 0 (about 7 standard errors)
    assert max(abs(wide["lo"]), abs(wide["hi"])) / sd < 0.2  # but smaller than 0.2 SD
    assert chord(picks.significant(small)) == []  # before the bound: named
    s = picks.summary_sentence(small)
    assert "chord tones" not in s and "whose intervals exclude zero but reach inside the bound)" in s
    large = run(0.2)
    named = chord(picks.significant(large))
    assert named and all(min(abs(f["sd"]["lo"]), abs(f["sd"]["hi"])) > picks.MIN_EFFECT_SD for f in named)
    d = named[0]["effect"]["est"] / large["overall"]["score_sd"]
    assert f"({named[0]['effect']['est']:+.3f}; {d:+.2f} SD)" in picks.summary_sentence(large)


def test_the_caption_and_the_stored_sentences_state_the_bound():
    """PICKS_CAPTION names the bound; docs/masker_picks.json's sentences are the ones summary_sentence
    makes from its stored numbers (re-rendered when the rule changes), and docs/MASKER_PICKS.md shows them."""
    assert f"±{picks.MIN_EFFECT_SD:g} standard deviations of the masker's scores" in picks.PICKS_CAPTION
    assert "differences not clearly beyond it are not named" in picks.PICKS_CAPTION
    doc = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    md = (ROOT / "docs" / "MASKER_PICKS.md").read_text()
    for res in [*doc["results"].values(), doc["control"]]:
        assert res["sentence"] == picks.summary_sentence(res)
        assert res["sentence"] in md


def test_too_little_music_names_nothing():
    """Fewer than MIN_BLOCKS four-bar blocks: however strong the effect, no class is named."""
    frames = _frames(lambda f: 0.2 + 0.6 * f["chord_tone"].to_numpy(), n_pieces=1, n=8 * 36, seed=3)  # 9 blocks
    res = picks.class_effects(frames, n_boot=200)
    assert res["n_groups"] == 9 and picks.significant(res) == []
    assert picks.summary_sentence(res).startswith("There is too little music to tell what the masker prefers")
    f = frames[0]
    prof = picks_draw.pick_profile(f, f["chord_tone"].to_numpy(bool), n_boot=200)
    assert not any(r["clear"] for rows in prof["columns"].values() for r in rows)
    assert "too short to say what the" in picks_draw.pick_sentence(prof) and "9 spans of 4 bars" in picks_draw.pick_sentence(prof)
    assert picks.class_effects(_frames(_noise, noise=0.2, n_pieces=5, n=16), n_boot=20)["resampled"] == "pieces"


def test_the_sentence_says_how_many_classes_were_tested():
    frames = _frames(lambda f: _by_duration(f) + 0.3 * (f["harmony"] == "passing").to_numpy(), noise=0.02)
    res = picks.class_effects(frames, n_boot=200)
    k = len(picks.candidates(res))
    assert k == 11  # harmony 3, non-chord tones, voice 3, one of each two-class column: metric, repeated, duration, register
    s = picks.summary_sentence(res)
    assert f"{k} classes tested, so each interval is at {1 - 0.05 / k:.1%}" in s and "over 12 pieces" in s
    named = picks.significant(res)[0]
    assert named["named"]["lo"] < named["effect"]["lo"] and named["named"]["hi"] > named["effect"]["hi"]
    # the corrected interval widens with the number of classes and with fewer units
    iv = {"est": 0.1, "lo": 0.05, "hi": 0.15}
    assert picks.named_interval(iv, 10, 1)["lo"] > picks.named_interval(iv, 10, 10)["lo"]
    assert picks.named_interval(iv, 100, 10)["lo"] > picks.named_interval(iv, 10, 10)["lo"]
    assert picks.named_interval(iv, 1, 10) is None and picks.named_interval({"est": 0.1, "lo": None}, 10) is None
    assert "not corrected for the number of classes" in picks.PICKS_CAPTION


# --------------------------------------------------------------------------- one draw (Explore)

def _draw_labels(n_bars: int = 48, per_bar: int = 8) -> pd.DataFrame:
    """A synthetic labelled piece: per bar, the same 8 notes (2 bass, 6 inner; alternating
    downbeat/off-beat), so every 4-bar span holds the same mix of classes."""
    n = n_bars * per_bar
    k = np.arange(n) % per_bar
    return pd.DataFrame({"bar": np.arange(n) // per_bar,
                         "voice_position": np.where(k < 2, "bass", "inner"),
                         "metric": np.where(k % 2 == 0, "downbeat", "off-beat"),
                         "chord_tone": k != 5})


def test_random_like_draws_as_many_notes_among_the_selectable():
    picked = np.zeros(50, dtype=bool)
    picked[[3, 7, 9]] = True
    sel = np.arange(50) >= 10
    a = picks_draw.random_like(picked, sel, seed=4)
    assert a.sum() == 3 and not a[:10].any()
    assert np.array_equal(a, picks_draw.random_like(picked, sel, seed=4))  # seeded
    assert picks_draw.random_like(picked, np.zeros(50, bool), seed=0).sum() == 0
    with pytest.raises(ValueError):
        picks_draw.random_like(picked, np.ones(3, bool))


def test_pick_profile_names_a_clear_class():
    lab = _draw_labels()
    picked = (lab["voice_position"] == "bass").to_numpy()  # the masker picks every bass note
    prof = picks_draw.pick_profile(lab, picked, n_boot=200, seed=0)
    rows = {r["class"]: r for r in prof["columns"]["voice_position"]}
    assert rows["bass"]["share_picked"] == pytest.approx(1.0)
    assert rows["bass"]["share_pool"] == pytest.approx(0.25)
    assert rows["bass"]["clear"] and rows["inner"]["clear"]
    assert not any(r["clear"] for r in prof["columns"]["metric"])  # half downbeats, as in the piece
    s = picks_draw.pick_sentence(prof)
    assert rows["bass"]["share_expected"] == pytest.approx(0.25)  # every span holds a quarter of bass notes
    assert "more often bass notes (100% of the picks vs 25% expected from the passages they are in)" in s
    assert "inner-voice" not in s  # two classes present: their effects mirror, the smaller side is named
    assert "downbeat" not in s
    json.dumps(prof, allow_nan=False)
    assert prof == picks_draw.pick_profile(lab, picked, n_boot=200, seed=0)  # deterministic for a seed


def test_pick_profile_says_when_nothing_stands_out():
    lab = _draw_labels()
    picked = np.zeros(len(lab), dtype=bool)
    picked[::2] = True  # per bar: one bass, three inner, all downbeats... not the same mix on metric
    lab["metric"] = "downbeat"
    prof = picks_draw.pick_profile(lab, picked, columns=("voice_position", "metric"), n_boot=100, seed=1)
    assert not any(r["clear"] for rows in prof["columns"].values() for r in rows)
    assert "look like the rest" in picks_draw.pick_sentence(prof)
    assert "nothing to describe" in picks_draw.pick_sentence(picks_draw.pick_profile(lab, np.zeros(len(lab), bool)))
    short = picks_draw.pick_profile(lab.iloc[:8], picked[:8], n_boot=50)
    assert "too short" in picks_draw.pick_sentence(short)
    with pytest.raises(ValueError):
        picks_draw.pick_profile(lab, picked[:5])


def test_two_class_column_names_one_side_only():
    lab = _draw_labels()
    picked = (~lab["chord_tone"]).to_numpy()  # only the non-chord tones
    s = picks_draw.pick_sentence(picks_draw.pick_profile(lab, picked, columns=("chord_tone",), n_boot=100))
    assert "more often non-chord tones" in s and "less often chord tones" not in s


def test_mask_recovery_and_its_sentence(tiny):
    _, model, tok = tiny
    piece = tok.read(SAMPLES[0]).subset(np.arange(150))
    n = len(piece)
    picked = np.zeros(n, dtype=bool)
    picked[::7] = True
    rnd = picks_draw.random_like(picked, seed=2)
    rec = picks_draw.mask_recovery(model, tok, piece, {"random": rnd, "masker": picked, "none": np.zeros(n, bool)})
    for k in ("random", "masker"):
        assert rec[k]["n"] == int(picked.sum())
        assert list(rec[k]["accuracy"]) == list(tok.attributes)
        assert all(0.0 <= v <= 1.0 for v in rec[k]["accuracy"].values())
        assert rec[k]["mean"] == pytest.approx(np.mean(list(rec[k]["accuracy"].values())))
    assert rec["none"]["n"] == 0 and rec["none"]["mean"] is None
    assert rec == picks_draw.mask_recovery(model, tok, piece, {"random": rnd, "masker": picked,
                                                          "none": np.zeros(n, bool)})
    assert rec["masker"]["notes"] == np.flatnonzero(picked).tolist()
    assert np.mean(rec["masker"]["hits"]) == pytest.approx(rec["masker"]["mean"])
    diff = picks_draw.recovery_difference(rec, piece.notes_table(), n_boot=200)
    assert diff["est"] == pytest.approx(rec["masker"]["mean"] - rec["random"]["mean"])
    s = picks_draw.recovery_sentence(rec, diff)
    assert s.startswith(f"With {int(picked.sum())} notes hidden in one draw")
    assert "random draw" in s and "masker's pick" in s
    assert "nothing to recover" in picks_draw.recovery_sentence({"random": rec["none"], "masker": rec["none"]})
    with pytest.raises(ValueError):
        picks_draw.mask_recovery(model, tok, piece, {"bad": np.zeros(3, bool)})


def _draw_rec(random_hits, masker_hits, n_notes, seed=0):
    """A mask_recovery result of two masks of as many notes, drawn at random among ``n_notes``."""
    def one(hits, notes):
        return {"n": len(hits), "accuracy": {"pitch": float(np.mean(hits))}, "mean": float(np.mean(hits)),
                "notes": sorted(notes), "hits": [float(h) for h in hits]}

    rng = np.random.default_rng(seed)
    k = len(masker_hits)
    return {"random": one(random_hits, rng.choice(n_notes, k, replace=False).tolist()),
            "masker": one(masker_hits, rng.choice(n_notes, k, replace=False).tolist())}


def test_recovery_difference_and_its_sentence():
    """Audit F11: the draw's verdict comes with a paired block bootstrap interval; "no clear
    difference" unless it excludes 0; the percentages and the difference as shown agree."""
    lab = _draw_labels()  # 48 bars: 12 spans of 4 bars, 384 notes
    n, k = len(lab), 96
    rng = np.random.default_rng(0)
    clear = _draw_rec(np.ones(k), np.zeros(k), n)
    diff = picks_draw.recovery_difference(clear, lab, n_boot=200)
    assert diff["n_blocks"] == 12 and diff["est"] == pytest.approx(-1.0) and diff["hi"] < 0
    s = picks_draw.recovery_sentence(clear, diff)
    assert "in one draw" in s and "100.0%" in s and "0.0%" in s
    assert "the masker's pick was harder (-100.0 points, 95% interval [" in s and "12 spans of 4 bars" in s
    # noise: the same rate under both masks -> "harder" said in about 5% of 200 draws at most
    harder = 0
    for r in range(200):
        rec = _draw_rec(rng.random(k) < 0.6, rng.random(k) < 0.6, n, seed=r)
        harder += "was harder" in picks_draw.recovery_sentence(rec, picks_draw.recovery_difference(rec, lab, seed=r))
    assert harder <= _bound(200), harder  # the app's 1,000 resamples
    # rounding: the difference is that of the shown percentages
    near = _draw_rec(np.r_[np.ones(61), np.zeros(39)] * 1.0, np.r_[np.ones(60), np.zeros(40)] * 1.0, 400)
    near["random"]["mean"], near["masker"]["mean"] = 0.6149, 0.6051
    assert picks_draw.shown_points(near) == (61.5, 60.5, -1.0)
    same = dict(near, masker=dict(near["masker"], mean=0.61495))
    tight = {"est": -0.0001, "lo": -0.0002, "hi": -0.00005, "n_blocks": 12}
    assert "no clear difference (+0.0 points" in picks_draw.recovery_sentence(same, tight)  # 61.5% and 61.5%
    assert "no clear difference (-1.0 points" in picks_draw.recovery_sentence(near, {**tight, "lo": -0.03, "hi": 0.01})
    # too little music, or no interval: no verdict
    few = _draw_rec(np.ones(k), np.zeros(k), 8 * 36)
    short = picks_draw.recovery_difference(few, lab.iloc[: 8 * 36], n_boot=50)  # 36 bars: 9 spans
    assert short["n_blocks"] == 9 and short["lo"] is None
    assert "too little music to tell which was harder" in picks_draw.recovery_sentence(few, short)
    assert "no verdict" in picks_draw.recovery_sentence(clear) and "harder" not in picks_draw.recovery_sentence(clear)


# --------------------------------------------------------------------------- a model against a control
# compare_effects: per class, the model's standardised effect minus the control's, with a paired bootstrap
# over the same pieces (resampled once for both), corrected like the sentence and held to MIN_EFFECT_SD.

def _two_models(model_inner: float, control_inner: float, *, control_scale: float = 1.0, n_pieces: int = 30,
                shared_sd: float = 0.15, n: int = 200, seed: int = 0):
    """The same pieces (labels), two "models": scores 0.44 + (piece_p + the given effect) * inner + noise,
    where piece_p (SD ``shared_sd`` over pieces) is shared by both models, so their effects are correlated
    over resamples; the control's scores are squeezed around 0.44 by ``control_scale``."""
    frames = _frames(_noise, n_pieces=n_pieces, n=n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    shared = rng.normal(0, shared_sd, n_pieces)
    model, control = [], []
    for p, f in enumerate(frames):
        inner = (f["voice_position"] == "inner").to_numpy()
        for out, eff, scale in ((model, model_inner, 1.0), (control, control_inner, control_scale)):
            g = f.copy()
            g["score"] = 0.44 + scale * ((shared[p] + eff) * inner + 0.1 * rng.standard_normal(len(f)))
            out.append(g)
    return model, control


def _inner(cmp):
    return next(f for f in cmp["classes"] if (f["column"], f["class"]) == ("voice_position", "inner"))


def test_class_effects_replicates_are_the_table_s_resamples():
    """replicates=True adds the resamples (numpy, popped before JSON) and changes nothing else; their
    quantiles are the table's intervals; the same seed and number of pieces draw the same resamples."""
    frames = _frames(lambda f: _by_duration(f) + 0.1 * (f["harmony"] == "passing").to_numpy(), noise=0.1)
    plain = picks.class_effects(frames, n_boot=200, seed=4)
    res = picks.class_effects(frames, n_boot=200, seed=4, replicates=True)
    reps = res.pop("replicates")
    assert json.dumps(res, sort_keys=True) == json.dumps(plain, sort_keys=True)
    rep = reps["columns"]["harmony"]
    i = rep["classes"].index("passing")
    row = next(r for r in res["columns"]["harmony"] if r["class"] == "passing")
    assert np.quantile(rep["adj"][:, i, 0], [0.025, 0.975]) == pytest.approx([row["score_adj"]["lo"], row["score_adj"]["hi"]])
    assert reps["weights"].shape == (200, 12) and (reps["weights"].sum(1) == 12).all()
    assert reps["score_sd"] == pytest.approx(np.std(np.concatenate([f["score"] for f in frames])), rel=0.2)
    other = picks.class_effects(_frames(_noise, noise=0.2, seed=9), n_boot=200, seed=4, replicates=True)
    assert np.array_equal(other["replicates"]["weights"], reps["weights"])  # what makes two measurements paired


def test_a_planted_difference_from_the_control_is_called_learned():
    """The model scores inner-voice notes 0.08 higher (about 0.5 SD) than the control; both share a
    piece-level inner effect: the difference is named, "learned", with the numbers of the table."""
    model, control = _two_models(0.08, 0.0)
    cmp = picks.compare_effects(model, control, n_boot=300, models=("trained", "untrained"))
    json.dumps(cmp, allow_nan=False)
    assert cmp["paired"] and cmp["k"] == len(picks.candidates(picks.class_effects(model, n_boot=10)))
    f = _inner(cmp)
    assert f["clear"] and f["named"]["lo"] > picks.MIN_EFFECT_SD and f["diff"]["est"] > 0.3
    assert f["diff"]["est"] == pytest.approx(f["model_sd"] - f["control_sd"])
    # nothing else (bass and top notes may be: their "other notes" hold the inner ones)
    assert not any(g["clear"] for g in cmp["classes"] if g["column"] != "voice_position")
    s = picks.comparison_sentence(cmp, [("voice_position", "inner")])
    assert s.startswith("Relative to notes of the same duration and register, and compared with untrained's masker")
    assert f"inner-voice notes {f['diff']['est']:.2f} SD higher than that head does" in s
    assert f"difference {f['diff']['est']:+.2f} SD [{f['named']['lo']:+.2f}, {f['named']['hi']:+.2f}]): learned" in s
    assert f"corrected for the {cmp['k']} classes compared" in s and "beyond ±0.2 SD" in s


def test_the_same_standardised_effect_is_not_called_learned():
    """Both models prefer inner-voice notes by the same 0.08 (in SD: the same), the control's scores
    squeezed to a fifth of the spread: raw differences differ fivefold, standardised ones do not,
    so the class is not called learned (the model's own sentence names it)."""
    model, control = _two_models(0.08, 0.08, control_scale=0.2, shared_sd=0.05)
    res = picks.class_effects(model, n_boot=300)
    assert ("voice_position", "inner") in [(g["column"], g["class"]) for g in picks.significant(res)]
    cmp = picks.compare_effects(model, control, n_boot=300)
    f = _inner(cmp)
    assert abs(f["diff"]["est"]) < 0.15 and not f["clear"]
    assert not any(g["clear"] for g in cmp["classes"])
    s = picks.comparison_sentence(cmp, [("voice_position", "inner")])
    assert "inner-voice notes" in s and "): learned" not in s
    assert ("not distinguishable from a random read-out" in s) or ("not called learned" in s)
    none = picks.comparison_sentence(cmp)
    assert "scores no class of note clearly differently from that head" in none


def test_the_paired_interval_is_narrower_than_an_unpaired_one():
    """The piece-level inner effect both models share cancels in each paired resample; resampling
    the control's pieces separately (another seed) leaves it in: a much wider interval."""
    model, control = _two_models(0.08, 0.0)
    cmp = picks.compare_effects(model, control, n_boot=400, seed=0)
    f = _inner(cmp)
    a = picks.class_effects(model, n_boot=400, seed=0, replicates=True)["replicates"]
    b = picks.class_effects(control, n_boot=400, seed=1, replicates=True)["replicates"]
    i = a["columns"]["voice_position"]["classes"].index("inner")
    unpaired = a["columns"]["voice_position"]["adj"][:, i, 0] / a["score_sd"] - \
        b["columns"]["voice_position"]["adj"][:, i, 0] / b["score_sd"]
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert f["diff"]["hi"] - f["diff"]["lo"] < 0.5 * (hi - lo)


def test_compare_effects_refuses_different_pieces():
    model, control = _two_models(0.08, 0.0, n_pieces=6)
    with pytest.raises(ValueError, match="not the same pieces"):
        picks.compare_effects(model, control[:-1], n_boot=20)
    shuffled = [control[1], control[0], *control[2:]]
    with pytest.raises(ValueError, match="not the same pieces"):
        picks.compare_effects(model, shuffled, n_boot=20)
    one = picks.compare_effects(model[:1], control[:1], n_boot=20)  # 5 blocks of one piece: too little music
    assert one["too_little_music"] and one["classes"] == []
    assert picks.comparison_sentence(one).startswith("There is too little to compare")


def test_a_real_but_small_difference_from_the_control_is_not_called_learned():
    """0.012 higher on inner-voice notes (about 0.12 SD) over 60 pieces of 500 notes: the corrected
    paired interval excludes 0 but not the 0.2 SD bound: "not called learned" (before the bound: learned)."""
    model, control = _two_models(0.012, 0.0, shared_sd=0.02, n_pieces=60, n=500)
    cmp = picks.compare_effects(model, control, n_boot=300)
    f = _inner(cmp)
    assert f["excludes_zero"] and f["named"]["lo"] > 0 and not f["clear"]
    s = picks.comparison_sentence(cmp, [("voice_position", "inner")])
    assert "inner-voice notes" in s and "a real difference, but not clearly beyond ±0.2 SD, so not called learned" in s


def test_the_stored_comparison_says_what_its_numbers_say():
    """docs/masker_picks.json's "comparison" (scripts/masker_picks.py): paired, its sentence the one
    comparison_sentence makes from its stored numbers (and in MASKER_PICKS.md), its verdicts those of
    its corrected intervals, and each head's effect that of the stored pooled tables."""
    doc = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    cmp, res, ctl = doc["comparison"], doc["results"]["all"], doc["control"]
    assert cmp["paired"] and cmp["models"] == [res["model"], ctl["model"]] and cmp["k"] == len(picks.candidates(res))
    assert cmp["named"] == [[f["column"], f["class"]] for f in picks.significant(res)]
    assert cmp["sentence"] == picks.comparison_sentence(cmp, map(tuple, cmp["named"]), cmp["control_text"])
    assert cmp["sentence"] in (ROOT / "docs" / "MASKER_PICKS.md").read_text()
    for f in cmp["classes"]:
        wide = picks.named_interval(f["diff"], cmp["n_groups"], cmp["k"], level=cmp["level"])
        assert f["named"] == pytest.approx(wide)
        assert f["clear"] == picks.beyond(wide, cmp["min_sd"]) and f["excludes_zero"] == picks.excludes_zero(wide)
        key = "score_diff" if f["column"] in picks.CONTROLS else "score_adj"
        for who, r in (("model_sd", res), ("control_sd", ctl)):
            row = next(x for x in r["columns"][f["column"]] if x["class"] == f["class"])
            assert f[who] == pytest.approx(row[key]["est"] / r["overall"]["score_sd"])
        said = re.search(re.escape(f["phrase"]) + r" [^:]*?\): learned", cmp["sentence"])
        assert not said or f["clear"], f  # "learned" only where the interval clears the bound


def test_named_interval_uses_the_quantiles_without_importing_scipy_stats():
    """The sentence's interval: the normal and Student t quantiles from scipy.special (the same numbers as
    scipy.stats' norm.ppf / t.ppf), so the first sentence a page shows does not wait ~0.5 s for scipy.stats."""
    import subprocess
    import sys

    code = ("import sys, json; import smu_explain.picks as p; "
            "r = p.named_interval({'est': 0.1, 'lo': 0.0, 'hi': 0.2}, 10, 3); "
            "print(json.dumps([float(r['lo']), float(r['hi']), 'scipy.stats' in sys.modules]))")
    lo, hi, imported = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                 check=True).stdout)
    from scipy.stats import norm, t

    half = float(t.ppf(1 - 0.05 / 6, 9)) * 0.2 / (2 * norm.ppf(0.975)) * (10 / 9) ** 0.5
    assert lo == pytest.approx(0.1 - half, rel=1e-12) and hi == pytest.approx(0.1 + half, rel=1e-12)
    assert not imported
