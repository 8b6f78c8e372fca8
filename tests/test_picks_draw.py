"""smu_explain.picks_draw: the Explore draw's two claims on noise and on planted effects.

What the picked notes have in common is decided against random draws of as many notes within the
same 4-bar spans (exact, corrected for the classes tested), so picks that merely favour some
passages name no class however the labels change across the piece; which mask was harder, on an interval at least as wide as
shuffling the two masks' notes within each 4-bar span. On noise each says something in at most 5%
of runs, however small the piece (down to MIN_BLOCKS spans) and however rare the classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smu_explain import picks_draw
from smu_explain.picks import MIN_BLOCKS


def _bound(runs: int, rate: float = 0.05, chance: float = 1e-6) -> int:
    """The smallest x such that a count ~ Binomial(``runs``, ``rate``) exceeds x with probability < ``chance``."""
    from scipy.stats import binom

    x = int(binom.isf(chance, runs, rate))
    while binom.sf(x, runs, rate) >= chance:
        x += 1
    return x


def _clear(profile) -> list[tuple[str, str]]:
    return [(col, r["class"]) for col, rows in profile["columns"].items() for r in rows if r["clear"]]


# --------------------------------------------------------------------------- what the picks have in common

def _rare_piece(rng, spans: int = MIN_BLOCKS, per_bar: int = 3, rare: float = 0.03) -> pd.DataFrame:
    """A small labelled piece whose columns have rare classes (``rare`` of the notes each)."""
    n = spans * 4 * per_bar

    def probs(m):
        return np.r_[np.full(m - 1, rare), 1 - (m - 1) * rare]

    return pd.DataFrame({"bar": np.arange(n) // per_bar,
                         "voice_position": rng.choice(["bass", "inner", "top", "solo"], n, p=probs(4)),
                         "metric": rng.choice(["downbeat", "beat", "off-beat"], n, p=[.25, .25, .5]),
                         "register": rng.choice(list("abcdef"), n, p=probs(6)),
                         "duration": rng.choice(list("vwxyz"), n, p=probs(5)),
                         "repeated": rng.random(n) < rare, "chord_tone": rng.random(n) < .7,
                         "role": rng.choice(["melody", "bridge", "accompaniment"], n, p=[.3, rare, .7 - rare])})


def _draw(rng, n: int, pool: np.ndarray, score=None, ratio: float = 0.15) -> np.ndarray:
    """The masker's pick: the ``ratio`` x n best-scored notes of the pool (random scores: noise)."""
    score = rng.random(n) if score is None else score
    free = np.flatnonzero(pool)
    picked = np.zeros(n, dtype=bool)
    picked[free[np.argsort(-score[free])[: int(ratio * n)]]] = True
    return picked


def test_noise_names_a_class_in_at_most_5_percent_of_small_pieces():
    """1,000 pieces of 10 spans of 4 bars (120 notes, 18 picks) whose picks depend on no label,
    with classes of 3% of the notes: the sentence names a class in at most 5% of them (here about
    5%; the bound is what a 5% rule exceeds with chance < 1e-6). The Bonferroni-corrected bootstrap
    intervals before 8c3256b named one in 13% (11% with 1,000 resamples): few, lumpy picks of rare
    classes."""
    rng = np.random.default_rng(20)
    runs, named = 1000, 0
    for r in range(runs):
        lab = _rare_piece(rng)
        pool = rng.random(len(lab)) < 0.7
        prof = picks_draw.pick_profile(lab, _draw(rng, len(lab), pool), pool, n_boot=100, seed=r)
        named += bool(_clear(prof))
        assert bool(_clear(prof)) == picks_draw.pick_sentence(prof).startswith("Compared with")
    assert named <= _bound(runs), named  # 86 of 1000


def test_a_difference_random_draws_often_give_is_not_named_even_when_every_span_is_alike():
    """12 identical spans: per span 16 notes (4 bass, 9 inner, 3 top) and 4 picks (1 bass, 2 inner,
    1 top): top-voice notes 25% of the picks vs 19%, inner 50% vs 56%. Random draws of 4 notes in
    each span are that far off often (p about 0.2): nothing is named. Resampling the spans, which
    are all alike, saw no spread at all, so the rule before 8c3256b named both."""
    voice = np.tile(["bass"] * 4 + ["inner"] * 9 + ["top"] * 3, 12)
    lab = pd.DataFrame({"bar": np.arange(len(voice)) // 4, "voice_position": voice})
    picked = np.tile(np.isin(np.arange(16), [0, 4, 5, 13]), 12)
    prof = picks_draw.pick_profile(lab, picked, n_boot=200, seed=0)
    rows = {r["class"]: r for r in prof["columns"]["voice_position"]}
    assert rows["top"]["share_picked"] == pytest.approx(0.25) and rows["top"]["share_pool"] == pytest.approx(3 / 16)
    assert rows["top"]["share_expected"] == pytest.approx(3 / 16)  # every span alike: the pool's share
    assert not _clear(prof)
    assert all(0.05 < r["p"] <= 1 and r["p"] <= r["p_family"] <= 1 for r in rows.values() if r["tested"])
    s = picks_draw.pick_sentence(prof)
    assert "look like the rest" in s and "3 classes tested against 1,999 random draws of as many notes" in s
    assert "within the same 4-bar spans" in s


def _passages(n_pick: int) -> tuple[pd.DataFrame, np.ndarray]:
    """10 spans of 4 bars, 20 notes each: the first 5 spans 80% chord tones (16 of 20), the last 5
    20%; the masker picks 5 notes in each of the first 5 spans, ``n_pick`` of them chord tones."""
    chord = np.concatenate([np.tile(np.arange(20) < 16, 5), np.tile(np.arange(20) < 4, 5)])
    picked = np.zeros(200, dtype=bool)
    for s in range(5):
        picked[20 * s + np.r_[np.arange(n_pick), 16 + np.arange(5 - n_pick)]] = True
    return pd.DataFrame({"bar": np.arange(200) // 5, "chord_tone": chord}), picked


def test_picks_that_favour_some_passages_are_compared_with_those_passages():
    """The masker picks only in the passages of chord tones (80% of their notes, 50% of the piece's)
    and there 4 of every 5 picks are chord tones, as a random draw in those passages would be: the
    picks are 80% chord tones vs 80% expected, nothing is named. Against the whole piece (the rule
    of 8c3256b) 80% vs 50% named chord tones. Picking only chord tones there (100% vs 80%
    expected) is named, and the sentence quotes the expected share."""
    lab, picked = _passages(4)
    prof = picks_draw.pick_profile(lab, picked, n_boot=200, seed=0)
    row = next(r for r in prof["columns"]["chord_tone"] if r["class"] is True or r["class"] == "chord tone")
    assert row["share_picked"] == pytest.approx(0.8) and row["share_pool"] == pytest.approx(0.5)
    assert row["share_expected"] == pytest.approx(0.8) and row["diff"]["est"] == pytest.approx(0.0)
    assert not _clear(prof) and "look like the rest of their passages" in picks_draw.pick_sentence(prof)
    lab, picked = _passages(5)
    prof = picks_draw.pick_profile(lab, picked, n_boot=200, seed=0)
    tested = next(r for r in prof["columns"]["chord_tone"] if r["tested"])
    from scipy.stats import hypergeom

    one = hypergeom.pmf(np.arange(6), 20, 16, 5)  # a span's chord tones among 5 random notes of its 20
    pmf = np.convolve(np.convolve(np.convolve(np.convolve(one, one), one), one), one)
    assert tested["p"] == pytest.approx(pmf[np.abs(np.arange(26) - 20) >= 5].sum())  # 25 of 25 vs 20 expected
    assert _clear(prof)
    assert "(100% of the picks vs 80% expected from the passages they are in)" in picks_draw.pick_sentence(prof)


def _drifting_piece(rng, spans: int = 16, per_bar: int = 8) -> pd.DataFrame:
    """A piece whose labels change from span to span: per span its own share of chord tones (5-95%),
    of top-voice notes (5-80%) and of repeated notes (0-30%)."""
    n = spans * 4 * per_bar
    span = np.arange(n) // (4 * per_bar)
    ct, top, rep = (rng.uniform(lo, hi, spans)[span] for lo, hi in ((0.05, 0.95), (0.05, 0.8), (0.0, 0.3)))
    u = rng.random(n)
    return pd.DataFrame({"bar": np.arange(n) // per_bar, "chord_tone": rng.random(n) < ct,
                         "voice_position": np.where(u < top, "top", np.where(u < (1 + top) / 2, "inner", "bass")),
                         "metric": rng.choice(["downbeat", "beat", "off-beat"], n, p=[.25, .25, .5]),
                         "repeated": rng.random(n) < rep})


def _clustered(rng, lab: pd.DataFrame, effect: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A masker that likes some passages (a score per span, U(0, 2)) and, by ``effect``, chord tones;
    the top 30% of the scores frozen, 15% of the notes picked among the rest."""
    n = len(lab)
    span = lab["bar"].to_numpy() // 4
    score = rng.random(n) + 2.0 * rng.random(span.max() + 1)[span] + effect * lab["chord_tone"].to_numpy()
    pool = score <= np.quantile(score, 0.7)
    return _draw(rng, n, pool, score), pool


def test_picks_clustered_in_passages_name_no_class_in_more_than_5_percent_of_pieces():
    """400 pieces of 16 spans whose labels change across the piece; the masker favours some passages
    but, within a passage, no class: some class is named in at most 5% of them (here about 3%; the
    bound is what a 5% rule exceeds with chance < 1e-6). Against draws from the whole piece (8c3256b)
    about 19% were named: the classes of the passages the picks favour."""
    rng = np.random.default_rng(24)
    runs, named = 400, 0
    for r in range(runs):
        lab = _drifting_piece(rng)
        prof = picks_draw.pick_profile(lab, *_clustered(rng, lab), n_boot=50, seed=r)
        named += bool(_clear(prof))
    assert named <= _bound(runs), named  # 44 of 400


def test_a_preference_within_the_passages_is_named_though_the_picks_cluster():
    """The same pieces and masker, its score 0.5 higher on chord tones: chord tones named in most of
    200 pieces (here about 77%). Against draws from the whole piece, about 49%: the passages' own
    share of chord tones, which the picks follow, hid it."""
    rng = np.random.default_rng(25)
    runs, found = 200, 0
    for r in range(runs):
        lab = _drifting_piece(rng)
        prof = picks_draw.pick_profile(lab, *_clustered(rng, lab, 0.5), n_boot=50, seed=r)
        found += any(r_["clear"] for r_ in prof["columns"]["chord_tone"])
    assert found >= 0.6 * runs, found


def test_a_planted_preference_is_named():
    """A masker that prefers a class (its score 0.4 higher on repeated notes, 10% of the notes, in
    pieces of 10 spans; 0.2 higher on chord tones, 70%, in pieces of 16): named in most of 200
    pieces each (here 86% and 96%, about as often as against draws from the whole piece). The
    intervals before 8c3256b found the rare class in 44%."""
    rng = np.random.default_rng(21)
    runs, found = 200, {"repeated": 0, "chord_tone": 0}
    for col, spans, effect in (("repeated", 10, 0.4), ("chord_tone", 16, 0.2)):
        for r in range(runs):
            n = spans * 4 * 8
            lab = pd.DataFrame({"bar": np.arange(n) // 8,
                                "voice_position": rng.choice(["bass", "inner", "top"], n, p=[.25, .5, .25]),
                                "metric": rng.choice(["downbeat", "beat", "off-beat"], n, p=[.25, .25, .5]),
                                "repeated": rng.random(n) < 0.1, "chord_tone": rng.random(n) < 0.7})
            pool = rng.random(n) < 0.7
            picked = _draw(rng, n, pool, rng.random(n) + effect * lab[col].to_numpy())
            prof = picks_draw.pick_profile(lab, picked, pool, n_boot=100, seed=r)
            found[col] += any(r_["clear"] for r_ in prof["columns"][col])
    assert found["repeated"] >= 0.75 * runs and found["chord_tone"] >= 0.85 * runs, found


# --------------------------------------------------------------------------- which mask was harder

def _rec(masks: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """A mask_recovery result from {name: (notes, hits)}."""
    return {k: {"n": len(h), "accuracy": {"pitch": float(np.mean(h))}, "mean": float(np.mean(h)),
                "notes": [int(i) for i in notes], "hits": [float(x) for x in h]} for k, (notes, h) in masks.items()}


def _harder(rec, lab, seed) -> bool:
    s = picks_draw.recovery_sentence(rec, picks_draw.recovery_difference(rec, lab, n_boot=200, seed=seed))
    return "pick was harder" in s or "draw was harder" in s


def test_noise_says_harder_in_fewer_than_5_percent_of_draws():
    """2,000 draws of 52 notes per mask in a piece of 11 spans of 4 bars (8 notes a bar), every note
    put back with chance 1/2 whichever mask hides it: "harder" in about 3% (the shuffle makes it
    at most 5%; the bootstrap beside it makes it rarer). Before, on the spans' bootstrap alone,
    about 6%: the bound, 4.5%, sits between."""
    n = 44 * 8
    lab = pd.DataFrame({"bar": np.arange(n) // 8})
    rng = np.random.default_rng(22)
    runs, harder = 2000, 0
    for r in range(runs):
        rec = _rec({k: (np.sort(rng.choice(n, 52, replace=False)), (rng.random(52) < 0.5) * 1.0)
                    for k in ("random", "masker")})
        harder += _harder(rec, lab, r)
    assert harder <= 0.045 * runs, harder


def test_a_difference_shuffles_often_give_is_no_verdict_even_when_every_span_is_alike():
    """12 identical spans of 20 notes: per span the random draw's 10 notes put back 6, the masker's
    10 put back 5 (-10 points). Shuffling the 20 notes of each span between the masks gives a
    difference that large in about 13% of shuffles: no clear difference. Resampling the spans,
    all alike, saw no spread, so the old interval was [-10, -10] and called the pick harder."""
    lab = pd.DataFrame({"bar": np.arange(12 * 20) // 5})
    span = np.arange(12 * 20) // 20
    first = np.arange(12 * 20) % 20 < 10
    hits = {"random": np.tile([1.0] * 6 + [0.0] * 4, 12), "masker": np.tile([1.0] * 5 + [0.0] * 5, 12)}
    rec = _rec({"random": (np.flatnonzero(first), hits["random"]), "masker": (np.flatnonzero(~first), hits["masker"])})
    diff = picks_draw.recovery_difference(rec, lab, n_boot=200, seed=0)
    assert diff["n_blocks"] == 12 and len(set(span)) == 12
    assert diff["est"] == pytest.approx(-0.1) and diff["lo"] < 0 < diff["hi"]
    assert diff["n_shuffle"] == picks_draw.DRAW_SHUFFLES
    assert "no clear difference (-10.0 points" in picks_draw.recovery_sentence(rec, diff)
    with pytest.raises(ValueError):  # too few shuffles to decide at 95%
        picks_draw.recovery_difference(rec, lab, n_shuffle=10)


def test_a_harder_pick_is_still_found():
    """The masker's notes put back with chance 0.35, the random draw's 0.6, 128 notes each in a piece
    of 16 spans: "the masker's pick was harder" in most of 200 draws (about 95%, as before: the
    shuffle and the bootstrap have about the old interval's power)."""
    n = 64 * 8
    lab = pd.DataFrame({"bar": np.arange(n) // 8})
    rng = np.random.default_rng(23)
    runs, found = 200, 0
    for r in range(runs):
        rec = _rec({k: (np.sort(rng.choice(n, 128, replace=False)), (rng.random(128) < p) * 1.0)
                    for k, p in (("random", 0.6), ("masker", 0.35))})
        s = picks_draw.recovery_sentence(rec, picks_draw.recovery_difference(rec, lab, n_boot=200, seed=r))
        found += "the masker's pick was harder" in s
    assert found >= 0.75 * runs, found
