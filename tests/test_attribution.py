"""Why a model decided: integrated gradients, occlusion, their agreement, attention, masker
explanations (smu_explain/attribution.py, attention.py, masker_note.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smu_explain.attention import attention_rollout, attention_weights, note_attention
from smu_explain.attribution import attribute_notes, attribution_agreement, predict_task
from smu_explain.encoder_inputs import encode_embeddings, note_embeddings, note_window
from smu_explain.errors import SMUInputError
from smu_explain.finetune import build_model
from smu_explain.masker_note import explain_masker_note, masker_occlusion, masker_recovery_losses
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.reading import read_piece
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TOK = Tokenizer(TokenizerConfig(max_len=16, stride=8))


@pytest.fixture(scope="module")
def piece(tmp_path_factory):
    from conftest import make_midi

    notes = [(i * 240, 240 + 120 * (i % 3), 50 + (i * 5) % 30, 40 + (i * 11) % 80) for i in range(40)]
    path = make_midi(tmp_path_factory.mktemp("attr"), notes, name="p.mid")
    return read_piece(path, config=TOK.config)


def task_model(task, classes, seed=0, dtype=torch.float64, smooth=False):
    torch.manual_seed(seed)
    m = build_model(task, classes, vocab_sizes=TOK.vocab_sizes, attributes=TOK.attributes, size="tiny",
                    max_len=16, seed=seed)
    if smooth:  # the head's ReLU -> tanh: a smooth f, so the midpoint rule converges as 1/steps^2
        seq = m.head.mlp if hasattr(m.head, "mlp") else m.head.net
        for i, layer in enumerate(seq):
            if isinstance(layer, torch.nn.ReLU):
                seq[i] = torch.nn.Tanh()
    # a random head gives near-uniform outputs; larger weights make the test sensitive
    with torch.no_grad():
        for p in m.head.parameters():
            p.mul_(8.0)
    return m.to(dtype).eval()


@pytest.fixture(scope="module")
def seq_model():
    return task_model("emotion", ["Q1", "Q2", "Q3", "Q4"])


@pytest.fixture(scope="module")
def note_model():
    return task_model("melody", ["melody", "bridge", "piano"], seed=1)


def test_embedding_path_matches_encode(seq_model, piece):
    enc = seq_model.encoder
    tok = torch.from_numpy(TOK.encode(piece)[:16])[None]
    with torch.no_grad():
        a = enc.encode(tok)
        b = encode_embeddings(enc, note_embeddings(enc, tok))
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("output", ["prob", "logit"])
def test_ig_completeness_sequence(piece, output):
    model = task_model("emotion", ["Q1", "Q2", "Q3", "Q4"], smooth=True)
    df = attribute_notes(model, TOK, piece, None, "ig", steps=256, output=output, batch_size=256)
    delta = df.attrs["value"] - df.attrs["baseline_value"]
    assert abs(delta) > 1e-4  # a test that can fail: the attributions carry something
    assert df["attribution"].sum() == pytest.approx(delta, rel=1e-4, abs=1e-7)
    assert abs(df.attrs["completeness_gap"]) < 1e-4 * abs(delta) + 1e-7
    assert df["in_window"].all() and len(df) == len(piece)
    # 40 notes, windows of 16 every 8: 4 windows, all counted for a sequence task
    assert df.attrs["n_windows"] == 4
    assert df.attrs["class"] == predict_task(model, TOK, piece)["class"]


def test_ig_completeness_relu_head(seq_model, piece):
    # the real heads' ReLU makes the integrand piecewise continuous (the midpoint rule converges
    # only as 1/steps): completeness within 1% with 1024 steps
    df = attribute_notes(seq_model, TOK, piece, None, "ig", steps=1024, batch_size=256)
    delta = df.attrs["value"] - df.attrs["baseline_value"]
    assert abs(delta) > 1e-3
    assert df["attribution"].sum() == pytest.approx(delta, rel=1e-2)


def test_ig_completeness_note_task_and_zero_outside(piece):
    model = task_model("melody", ["melody", "bridge", "piano"], seed=1, smooth=True)
    target = 3  # only in the first window (0..15)
    df = attribute_notes(model, TOK, piece, target, "ig", steps=256, batch_size=256, output="logit")
    delta = df.attrs["value"] - df.attrs["baseline_value"]
    assert abs(delta) > 1e-4
    assert df["attribution"].sum() == pytest.approx(delta, rel=1e-4, abs=1e-7)
    assert df.attrs["n_windows"] == 1
    outside = ~df["in_window"].to_numpy()
    assert outside.sum() == len(piece) - 16
    assert (df.loc[outside, "attribution"] == 0.0).all()


def test_occlusion_exact_zero_outside_window_and_matches_manual(note_model, piece):
    target = 20  # windows 8..23 and 16..31
    occ = attribute_notes(note_model, TOK, piece, target, "occlusion", output="prob", batch_size=5)
    assert occ.attrs["n_windows"] == 2
    inw = occ["in_window"].to_numpy()
    assert inw.sum() == 24 and not inw[:8].any() and not inw[32:].any()
    assert (occ.loc[~inw, "attribution"] == 0.0).all()
    assert np.abs(occ.loc[inw, "attribution"]).max() > 0
    # one note by hand: mean over the two windows of p(class) - p(class | note 10 masked)
    c = occ.attrs["class_index"]
    tokens = TOK.encode(piece)
    diffs = []
    for start in (8, 16):
        w = tokens[start:start + 16].copy()
        w[0, TOK.index["bar"]] = 2
        m = w.copy()
        if start <= 10 < start + 16:
            m[10 - start] = 1
        with torch.no_grad():
            p = torch.softmax(note_model(torch.from_numpy(np.stack([w, m])))["logits"][:, target - start], -1)
        diffs.append(float(p[0, c] - p[1, c]))
    assert occ.loc[10, "attribution"] == pytest.approx(np.mean(diffs), abs=1e-9)


def test_agreement_spearman(seq_model, piece):
    res = attribution_agreement(seq_model, TOK, piece, steps=32)
    assert res["n"] == len(piece)
    assert -1.0 <= res["spearman"] <= 1.0
    assert res["ig"].attrs["class"] == res["occlusion"].attrs["class"] == res["class"]


def test_bad_targets(seq_model, note_model, piece):
    with pytest.raises(SMUInputError, match="note task"):
        attribute_notes(note_model, TOK, piece, None)
    with pytest.raises(SMUInputError, match="sequence task"):
        attribute_notes(seq_model, TOK, piece, 3)
    with pytest.raises(SMUInputError, match="not in the piece"):
        attribute_notes(note_model, TOK, piece, 400)
    with pytest.raises(SMUInputError, match="method"):
        attribute_notes(seq_model, TOK, piece, None, method="shap")
    with pytest.raises(SMUInputError, match="unknown class"):
        attribute_notes(seq_model, TOK, piece, None, cls="Q9")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(3)
    return MidiBert(ModelConfig.named("tiny", TOK.vocab_sizes, TOK.attributes, max_len=16)).eval()


def test_attention_rows_sum_to_one_and_match_sdpa(bert, piece):
    wt, ids, p = note_window(bert, TOK, piece, 12)
    w = attention_weights(bert, wt)
    L = len(wt)
    assert w.shape == (bert.config.n_layers, bert.config.n_heads, L, L)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    # the recomputed weights reproduce the fused attention output of the first block
    with torch.no_grad():
        tok = torch.from_numpy(wt)[None]
        h = bert.embed_notes(note_embeddings(bert, tok))
        blk = bert.blocks[0]
        x = blk.ln1(h)
        v = blk.attn.qkv(x).view(1, L, 3, blk.attn.n_heads, -1)[:, :, 2].transpose(1, 2)
        y = torch.from_numpy(w[0]).float()[None] @ v
        mine = blk.attn.proj(y.transpose(1, 2).reshape(1, L, -1))
        assert torch.allclose(mine, blk.attn(x, None), atol=1e-5)
    R = attention_rollout(w)
    assert R.shape == (L, L)
    np.testing.assert_allclose(R.sum(-1), 1.0, atol=1e-9)


def test_note_attention_vector(bert, piece):
    for kw in ({}, {"layer": 0, "head": 1}, {"rollout": True}):
        v = note_attention(bert, TOK, piece, 12, **kw)
        assert v.shape == (len(piece),)
        assert v.sum() == pytest.approx(1.0, abs=1e-9)
        _, ids, _ = note_window(bert, TOK, piece, 12)
        outside = np.setdiff1d(np.arange(len(piece)), ids)
        assert (v[outside] == 0).all()
    with pytest.raises(SMUInputError, match="layer"):
        note_attention(bert, TOK, piece, 12, layer=5)


def test_masker_occlusion_and_losses(bert, piece):
    note = 12
    occ = masker_occlusion(bert, TOK, piece, note, batch_size=7)
    wt, ids, p = note_window(bert, TOK, piece, note)
    with torch.no_grad():
        tok = torch.from_numpy(wt)[None]
        clean = float(bert.masker(bert.encode(tok))[0, p])
        j = 5 if p != 5 else 6
        m = tok.clone()
        m[0, j] = 1
        masked = float(bert.masker(bert.encode(m))[0, p])
    assert occ.attrs["score"] == pytest.approx(clean, abs=1e-6)
    assert occ.loc[ids[j], "change"] == pytest.approx(masked - clean, abs=1e-6)
    assert occ.loc[note, "change"] == 0.0
    assert (occ.loc[~occ["in_window"], "change"] == 0).all()
    losses = masker_recovery_losses(bert, TOK, piece, note, n_masks=5, ratio=0.25, seed=1)
    assert len(losses) == 5 and (losses["n_masked"] == 4).all()
    attr_cols = [c for c in losses.columns if c.startswith("loss_")]
    np.testing.assert_allclose(losses[attr_cols].sum(axis=1), losses["loss"])
    assert (losses["loss"] > 0).all()
    again = masker_recovery_losses(bert, TOK, piece, note, n_masks=5, ratio=0.25, seed=1)
    np.testing.assert_allclose(again["loss"], losses["loss"])
    summary = explain_masker_note(bert, TOK, piece, note, n_masks=5, top=4)
    assert len(summary["top"]) == 4 and note not in summary["top"]["note"].tolist()
    assert summary["mean_loss"] == pytest.approx(
        masker_recovery_losses(bert, TOK, piece, note, n_masks=5)["loss"].mean())


def test_why_figures(seq_model, note_model, bert, piece):
    from smu_explain import charts, palette, valueroll

    ig = attribute_notes(note_model, TOK, piece, 20, "ig", steps=8)
    fig = valueroll.attribution_roll(ig, bar_starts_q=piece.bar_starts_q)
    names = [t.name for t in fig.data]
    assert "outside the window" in names and "selected note" in names
    body = next(t for t in fig.data if t.name.startswith("notes (colour"))
    sel = ig["in_window"].to_numpy() & (ig["note"] != 20).to_numpy()
    np.testing.assert_allclose([float(t) for t in body.text], ig["attribution"].to_numpy()[sel], rtol=1e-3)
    assert [int(c[0]) for c in body.customdata] == ig["note"][sel].tolist()
    lim = np.abs(ig.loc[ig["in_window"], "attribution"]).max()
    assert fig.layout.coloraxis.cmin == pytest.approx(-lim) and fig.layout.coloraxis.cmax == pytest.approx(lim)
    # the colours: each value on the diverging scale (strings; the colour bar is the layout's axis)
    assert list(body.marker.color) == palette.scale_colours(ig["attribution"].to_numpy()[sel], "RdBu_r", -lim, lim)

    w = note_attention(bert, TOK, piece, 12)
    df = ig[["note", "pitch", "velocity", "track", "onset_q", "duration_q", "bar", "beat"]]
    fa = valueroll.attention_roll(df, w, 12, arcs=3)
    arcs = next(t for t in fa.data if t.name.startswith("top 3"))
    assert sum(x is None for x in arcs.x) == 3
    sel_tr = next(t for t in fa.data if t.name == "selected note")
    assert int(sel_tr.customdata[0][0]) == 12

    occ = attribute_notes(note_model, TOK, piece, 20, "occlusion")
    sc = charts.attribution_scatter(ig, occ)
    assert len(sc.data[0].x) == int(ig["in_window"].sum())
    bars = charts.before_after_bars([("a", 0.7), ("b", 0.3)], [("b", 0.6), ("a", 0.4)])
    assert list(bars.data[1].y) == [0.4, 0.6]


# ----------------------------------------------------------------------------- fast modes (issue 6 speed)

def test_sampled_occlusion_equals_full_on_the_sample(note_model, seq_model, piece):
    full = attribute_notes(seq_model, TOK, piece, None, "occlusion", output="prob", batch_size=7)
    part = attribute_notes(seq_model, TOK, piece, None, "occlusion", output="prob", batch_size=7,
                           max_notes=11, seed=3)
    m = part["measured"].to_numpy()
    assert m.sum() == 11 == part.attrs["n_measured"]
    assert full["measured"].all() and full.attrs["n_measured"] == len(piece)
    np.testing.assert_allclose(part.loc[m, "attribution"], full.loc[m, "attribution"], rtol=0, atol=1e-12)
    assert part.loc[~m, "attribution"].isna().all()
    # sampled notes are occluded in every window that holds them: far fewer passes than full occlusion
    assert part.attrs["n_forward"] < full.attrs["n_forward"] / 2
    # the sample is seeded
    again = attribute_notes(seq_model, TOK, piece, None, "occlusion", max_notes=11, seed=3)
    assert (again["measured"] == part["measured"]).all()
    ig = attribute_notes(seq_model, TOK, piece, None, "ig", steps=8)
    assert spearman_n(ig, part) == 11
    # a note task: only notes inside the target's windows can be sampled; outside stays exactly 0
    occ = attribute_notes(note_model, TOK, piece, 20, "occlusion", max_notes=5, seed=0)
    assert occ["measured"].sum() == 5 and occ.loc[occ["measured"], "in_window"].all()
    assert (occ.loc[~occ["in_window"], "attribution"] == 0.0).all()


def spearman_n(a, b):
    from smu_explain.attribution import spearman_agreement

    return spearman_agreement(a, b)["n"]


def test_bf16_passes_keep_ig_close_and_completeness_visible(piece):
    model = task_model("emotion", ["Q1", "Q2", "Q3", "Q4"], dtype=torch.float32, smooth=True)
    ref = attribute_notes(model, TOK, piece, None, "ig", steps=64, batch_size=64)
    fast = attribute_notes(model, TOK, piece, None, "ig", steps=64, batch_size=64, precision="bf16")
    assert fast.attrs["precision"] == "bf16"
    # f(x) and f(baseline) are fp32 in both; the path gradients differ (bf16 rounding) but not much
    assert fast.attrs["value"] == ref.attrs["value"]
    assert not np.allclose(fast["attribution"], ref["attribution"], rtol=0, atol=0)
    from scipy.stats import spearmanr

    assert spearmanr(fast["attribution"], ref["attribution"]).statistic > 0.9
    delta = ref.attrs["value"] - ref.attrs["baseline_value"]
    assert abs(fast.attrs["completeness_gap"]) < 0.1 * abs(delta)
    # occlusion refuses bf16 (single-note effects fall below its resolution)
    with pytest.raises(SMUInputError, match="fp32 only"):
        attribute_notes(model, TOK, piece, None, "occlusion", precision="bf16")
    res = attribution_agreement(model, TOK, piece, steps=8, precision="bf16")
    assert res["ig"].attrs["precision"] == "bf16" and res["occlusion"].attrs["precision"] == "fp32"


def test_fast_mode_arguments_checked(seq_model, piece):
    with pytest.raises(SMUInputError, match="precision"):
        attribute_notes(seq_model, TOK, piece, None, precision="fp8")
    with pytest.raises(SMUInputError, match="max_notes"):
        attribute_notes(seq_model, TOK, piece, None, "occlusion", max_notes=0)


def test_attribution_roll_greys_unmeasured_notes(seq_model, piece):
    from smu_explain import charts, valueroll

    occ = attribute_notes(seq_model, TOK, piece, None, "occlusion", max_notes=9, seed=1)
    fig = valueroll.attribution_roll(occ)
    names = [t.name for t in fig.data]
    assert "not measured" in names
    grey = fig.data[names.index("not measured")]
    assert len(grey.x) == len(piece) - 9
    res = attribution_agreement(seq_model, TOK, piece, steps=8, occlusion_notes=9, seed=1)
    assert res["n"] == 9
    sc = charts.attribution_scatter(res["ig"], res["occlusion"])
    assert len(sc.data[0].x) == 9


def test_fast_precision_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    from smu_explain.precision import fast_precision

    real_open = builtins.open
    for capability in ("AVX512", "AVX2", "DEFAULT"):
        # the CPU's flags count only when PyTorch runs its AVX-512 kernels (ATEN_CPU_CAPABILITY)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        for flags, want in (("fpu avx2 avx512f avx512_bf16", "bf16"), ("fpu amx_bf16 amx_tile", "bf16"),
                            ("fpu avx2 avx512f", "fp32")):
            info = tmp_path / "cpuinfo"
            info.write_text(f"flags\t\t: {flags}\n")
            monkeypatch.setattr(builtins, "open",
                                lambda p, *a, info=info, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
            assert fast_precision("cpu") == (want if capability == "AVX512" else "fp32"), (capability, flags)
        monkeypatch.setattr(builtins, "open", real_open)
