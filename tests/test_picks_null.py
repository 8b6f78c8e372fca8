"""picks_null: the trained masker head against many random heads on the same hidden states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smu_explain import picks, picks_null

ROOT = Path(__file__).resolve().parents[1]
DUR = ["< 1/8 (<0.5 q)", ">= 1/2 (>= 2 q)"]
REG = ["C3-B3", "C4-B4", "C5-B5"]
D = 12
#: label columns whose classes the synthetic hidden states encode (so random read-outs differ by class; not the
#: voice, where a preference is planted)
CODED = ("harmony", "metric", "duration", "register")


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny matrix products: one torch thread is several times faster than two here (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _labels(rng, n_pieces: int = 10, n: int = 240) -> list[pd.DataFrame]:
    out = []
    for _ in range(n_pieces):
        harm = rng.choice(["chord tone", "passing", "neighbour"], n, p=[0.6, 0.25, 0.15])
        out.append(pd.DataFrame({
            "bar": np.arange(n) // 8, "harmony": harm, "chord_tone": harm == "chord tone",
            "voice_position": rng.choice(["bass", "inner", "top"], n), "metric": rng.choice(["downbeat", "off-beat"], n),
            "repeated": rng.random(n) < 0.2, "duration": rng.choice(DUR, n), "register": rng.choice(REG, n),
            "role": "other"}))
    return out


def _hidden(frames, rng, scale: float = 1.5) -> list[np.ndarray]:
    """Hidden states that carry the labels: a fixed random vector per class of each coded column, plus noise."""
    emb = {(c, k): scale * rng.standard_normal(D) for c in CODED for k in sorted(set().union(*(set(f[c]) for f in frames)))}
    return [(rng.standard_normal((len(f), D)) + sum(np.stack([emb[(c, v)] for v in f[c]]) for c in CODED)
             ).astype(np.float32) for f in frames]


def _like():
    from torch import nn

    return nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 1))


def _with_scores(frames, scores) -> list[pd.DataFrame]:
    out, s = [], 0
    for f in frames:
        g = f.copy()
        g["score"] = scores[s:s + len(f)]
        g["picked"] = g["frozen"] = False
        out.append(g)
        s += len(f)
    return out


def _setup(seed: int, plant: float = 0.0):
    """Frames whose ``score`` is one more head drawn like the null's (seed outside theirs), plus ``plant`` on
    the logits of inner-voice notes; their hidden states; that head."""
    rng = np.random.default_rng(seed)
    frames = _labels(rng)
    hidden = _hidden(frames, rng)
    head = picks_null.draw_head(_like(), "torch", 10 ** 9 + seed)
    H = np.concatenate(hidden)
    p = picks_null.head_scores(H, [head])[:, 0]
    inner = np.concatenate([f["voice_position"].to_numpy() == "inner" for f in frames])
    logit = np.log(p / (1 - p)) + plant * inner
    return _with_scores(frames, 1 / (1 + np.exp(-logit))), hidden, head


def _find(null, column, cls):
    return next(f for f in null["classes"] if (f["column"], f["class"]) == (column, cls))


def test_a_head_trained_to_prefer_a_class_is_called_learned():
    """The logits of inner-voice notes raised: that class is learned, beyond every random head, with the exact
    Monte Carlo p-value corrected for the k classes; the other classes are not."""
    n = 600
    for seed in range(3):
        frames, hidden, _ = _setup(seed, plant=0.5)
        null = picks_null.random_head_test(frames, hidden, _like(), "torch", n_heads=n, seed=seed)
        k = null["k"]
        assert k == len(picks.candidates(picks.class_effects(frames, n_boot=50))) and k >= 10
        f = _find(null, "voice_position", "inner")
        assert f["n"] == n and f["trained_sd"] > f["random_max"]
        assert f["p"] == pytest.approx(1 / (n + 1)) and f["p_corrected"] == pytest.approx(k / (n + 1))
        assert f["learned"] and f["trained_sd"] - f["random_median"] >= 0.2
        assert f["random_lo"] < f["random_median"] < f["random_hi"] < f["trained_sd"]
        assert {g["column"] for g in null["classes"] if g["learned"]} == {"voice_position"}  # inner (and its mirror)
        assert all(g["p_corrected"] == pytest.approx(min(1.0, k * g["p"])) for g in null["classes"])
        gap = f["trained_sd"] - f["random_median"]  # the minimum effect is measured from the random heads' median
        for bound, called in ((gap - 0.01, True), (gap + 0.01, False)):
            again = picks_null.random_head_test(frames, hidden, _like(), "torch", n_heads=n, seed=seed, min_sd=bound)
            assert _find(again, "voice_position", "inner")["learned"] is called
        text = picks_null.null_sentence(null, [("voice_position", "inner")])
        assert "learned to score inner-voice notes higher" in text and f"{n:,} random read-outs" in text


def test_a_random_head_is_not_called_learned():
    """A 'trained' head that is one more draw from the null's distribution: some class is called learned in at
    most about 5% of runs (Bonferroni over the k classes), although its effects are as large as the random
    heads' (so the 0.2 SD bound alone would not protect it: without the correction about half the runs would)."""
    runs, learned, wide = 30, 0, 0
    for seed in range(runs):
        frames, hidden, _ = _setup(100 + seed)
        null = picks_null.random_head_test(frames, hidden, _like(), "torch", n_heads=300, seed=seed)
        learned += any(f["learned"] for f in null["classes"])
        wide += sum(f["random_hi"] - f["random_lo"] > 0.8 for f in null["classes"])
    assert wide >= runs * 3  # the random read-outs do differ by class, by more than the bound
    assert learned <= 4  # Binomial(30, 0.05) exceeds 4 with probability 0.016; here it is at most 0.05


def test_the_p_value_is_measured_from_the_random_heads_centre():
    """Random heads all near +1 SD: a trained effect of -1 SD is extreme (p = 1 / (n + 1)), one of +1 is not,
    although both are as far from 0 as the random heads; and p is a valid p-value when the trained effect is
    one more draw (skewed distribution, many replicates)."""
    rng = np.random.default_rng(0)
    R = 1 + 0.1 * rng.standard_normal((99, 2))
    p, centre = picks_null.monte_carlo_p(np.array([-1.0, 1.0]), R)
    assert p[0] == pytest.approx(1 / 100) and p[1] > 0.5
    assert abs(centre[1] - 1) < 0.1
    reps = 2000
    draws = rng.exponential(size=(reps, 100))
    ps = np.array([picks_null.monte_carlo_p(d[:1], d[1:, None])[0][0] for d in draws])
    assert (ps <= 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)
    assert (ps <= 0.2).mean() > 0.12  # not a test that never rejects


def test_the_heads_are_drawn_as_the_model_initialises_them():
    """Seeded, different from each other, and from the distribution of ``config.init``: PyTorch's own
    (uniform within 1 / sqrt(fan_in)) for "torch", N(0, 0.02) with zero biases for "normal"."""
    like = _like()
    a, b, a2 = (picks_null.draw_head(like, "torch", s) for s in (1, 2, 1))
    assert all((x == y).all() for x, y in zip(a.parameters(), a2.parameters(), strict=True))
    assert not all((x == y).all() for x, y in zip(a.parameters(), b.parameters(), strict=True))
    w = a[0].weight.detach().numpy()
    assert np.abs(w).max() <= 1 / np.sqrt(D) and w.std() > 0.5 / np.sqrt(3 * D)
    normal = picks_null.draw_head(like, "normal", 1)
    assert abs(float(normal[0].weight.detach().std()) - 0.02) < 0.005 and float(normal[0].bias.detach().abs().max()) == 0
    assert picks_null.head_seed(0, 1) != picks_null.head_seed(0, 2) != picks_null.head_seed(1, 2)


def test_the_effects_are_class_effects_and_the_head_scores_its_table(tmp_path):
    """effect_matrix of the table's scores = class_effects' point estimates over its score SD; note_hidden of a
    tiny model's piece, read by its masker head, is its label_table's score; a head that does not give the
    table's scores is refused."""
    from app_helpers import make_model

    from smu_explain.checkpoint import load_checkpoint

    ckpt = load_checkpoint(make_model(tmp_path / "tiny", seed=0), kind="pretrained")
    model, tok = ckpt.encoder.eval(), ckpt.tokenizer
    pieces = [tok.read(p) for p in sorted((ROOT / "sample_midi").glob("*.mid"))[:3]]
    pieces = [p.subset(np.arange(min(300, len(p)))) for p in pieces]
    frames = [picks.label_table(model, tok, p) for p in pieces]
    hidden = [picks_null.note_hidden(model, tok, p) for p in pieces]
    assert [len(h) for h in hidden] == [len(f) for f in frames]
    H = np.concatenate(hidden)
    got = picks_null.head_scores(H, [model.masker_head])[:, 0]
    assert np.abs(got - np.concatenate([f["score"] for f in frames])).max() < 1e-5
    res = picks.class_effects(frames, n_boot=20)
    keys = [(c["column"], c["class"]) for c in picks.candidates(res)]
    eff, sd = picks_null.effect_matrix(frames, np.concatenate([f["score"] for f in frames])[:, None], keys)
    want = [next(r for r in res["columns"][c] if r["class"] == k)["score_diff" if c in picks.CONTROLS else "score_adj"]
            ["est"] / res["overall"]["score_sd"] for c, k in keys]
    assert np.allclose(eff[0], want) and sd[0] == pytest.approx(res["overall"]["score_sd"])
    null = picks_null.random_head_test(frames, hidden, model.masker_head, model.config.init, n_heads=8,
                                       result=res, trained_head=model.masker_head)
    assert null["trained_head_gap"] < 1e-5 and len(null["classes"]) == len(keys)
    other = picks_null.draw_head(model.masker_head, model.config.init, 5)
    with pytest.raises(ValueError, match="differ"):
        picks_null.random_head_test(frames, hidden, model.masker_head, model.config.init, n_heads=8,
                                    result=res, trained_head=other)


def test_the_stored_null_says_what_its_numbers_say():
    """docs/masker_picks.json's ``null``: enough heads for a corrected p below alpha, the verdicts follow the rule
    from the stored p-values and ranges, the trained effects are the stored pooled table's, and the sentence is the
    one these numbers make and is on the page, with the single-control subsection marked superseded."""
    import json

    doc = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    null, res = doc["null"], doc["results"]["all"]
    n, k, alpha = null["n_heads"], null["k"], null["alpha"]
    assert k / (n + 1) < alpha and null["init"] == "torch" and len(null["classes"]) == k
    for f in null["classes"]:
        assert 1 / (n + 1) - 1e-12 <= f["p"] <= 1 and f["p_corrected"] == pytest.approx(min(1.0, k * f["p"]))
        assert f["random_min"] <= f["random_lo"] <= f["random_median"] <= f["random_hi"] <= f["random_max"]
        assert f["learned"] == (f["p_corrected"] < alpha and abs(f["trained_sd"] - f["random_median"]) >= 0.2)
        row = next(r for r in res["columns"][f["column"]] if r["class"] == f["class"])
        est = row["score_diff" if f["column"] in picks.CONTROLS else "score_adj"]["est"]
        assert f["trained_sd"] == pytest.approx(est / res["overall"]["score_sd"])
    assert null["sentence"] == picks_null.null_sentence(null, map(tuple, null["named"]))
    md = (ROOT / "docs" / "MASKER_PICKS.md").read_text()
    assert null["sentence"] in md and "**Superseded** by the next subsection" in md


def test_a_confirmatory_run_tests_only_the_classes_it_is_given():
    """``classes=``: only the given (column, class) pairs are tested, in their order, each with the p-value the
    full run gives it (the same heads), corrected for their number (a class the pieces lack counts in k, listed
    as untested); the larger class of a two-class column, which the full run leaves out, may be asked for."""
    frames, hidden, _ = _setup(0, plant=0.5)
    n = 200
    full = picks_null.random_head_test(frames, hidden, _like(), "torch", n_heads=n, seed=3)
    given = [("voice_position", "inner"), ("harmony", "passing"), ("voice_position", "solo"),
             ("chord_tone", "chord tone"), ("voice_position", "inner")]
    few = picks_null.random_head_test(frames, hidden, _like(), "torch", n_heads=n, seed=3, classes=given)
    assert few["k"] == 4 and few["untested"] == [["voice_position", "solo"]]
    assert [(f["column"], f["class"]) for f in few["classes"]] == [("voice_position", "inner"), ("harmony", "passing"),
                                                                    ("chord_tone", "chord tone")]
    assert ("chord_tone", "chord tone") not in {(f["column"], f["class"]) for f in full["classes"]}
    for f in few["classes"][:2]:
        g = _find(full, f["column"], f["class"])
        assert f["p"] == g["p"] and f["trained_sd"] == g["trained_sd"] and f["random_median"] == g["random_median"]
        assert f["p_corrected"] == pytest.approx(min(1.0, 4 * f["p"])) and f["p_corrected"] <= g["p_corrected"]
    inner = _find(few, "voice_position", "inner")
    assert inner["learned"] and inner["p_corrected"] == pytest.approx(4 / (n + 1))
