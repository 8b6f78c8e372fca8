"""explain_piece table and recovery_accuracy on a tiny random model and tiny pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smu_explain.checkpoint import save_checkpoint
from smu_explain.explain import explain_piece, masker_view, recovery_accuracy
from smu_explain.freeze_book import FreezeBook
from smu_explain.masks import validate
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.piece import NOTE_COLUMNS
from smu_explain.tokenizer import MASK_ID, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig


@pytest.fixture
def tok():
    return Tokenizer()


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=512)).eval()


@pytest.fixture
def piece(tmp_path, make_midi, tok):
    notes = [(i * 240, 240 * (1 + i % 3), 50 + (i * 5) % 30, 60 + i % 40) for i in range(40)]
    return tok.read(make_midi(tmp_path, notes, name="p.mid"))


class Spy(torch.nn.Module):
    """Wraps the model (unwrap() finds it through .module) and records forward calls."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.calls = []

    def forward(self, tokens, attention_mask=None, **kw):
        self.calls.append((tokens.clone(), attention_mask.clone(), kw.get("heads_at")))
        return self.module(tokens, attention_mask, **kw)


def test_table_columns_and_rules(model, tok, piece):
    df = explain_piece(model, tok, piece, ratio=0.15, top_k=3)
    N = len(piece)
    assert len(df) == N and df["note"].tolist() == list(range(N))
    expected = NOTE_COLUMNS + ["score", "picked", "frozen"]
    for a in tok.attributes:
        expected += [f"loss_{a}", f"correct_{a}", f"pred_{a}", f"topk_{a}", f"true_{a}"]
    assert list(df.columns) == expected
    assert df["pitch"].tolist() == piece.pitch.tolist()
    assert ((df.score > 0) & (df.score < 1)).all()
    # frozen = top 30% by score; picked = top 15% of the rest; never both
    assert df.frozen.sum() == round(0.3 * N)
    assert df.score[df.frozen].min() >= df.score[~df.frozen].max()
    rest = df[~df.frozen]
    assert df.picked.sum() == round(0.15 * len(rest)) and not (df.picked & df.frozen).any()
    assert rest.score[rest.picked].min() >= rest.score[~rest.picked].max()
    # scores are the masker's on the clean sequence
    tokens = torch.from_numpy(tok.encode(piece))[None]
    with torch.no_grad():
        s = model.masker(model.encode(tokens, torch.ones(1, N, dtype=torch.bool)))[0]
    assert np.allclose(df.score.to_numpy(), s.numpy(), atol=1e-5)


@pytest.mark.parametrize("option,value", [("freeze_top", 2.0), ("freeze_top", -1.0), ("freeze_top", 1.0),
                                          ("top_k", 0), ("top_k", -1), ("top_k", 2.5), ("batch_size", 0),
                                          ("seed", -1), ("seed", 2 ** 32), ("precision", "fp8")])
def test_options_out_of_range_are_refused_by_name(model, tok, piece, option, value):
    """As the CLI's flags are: a freeze share of 2 would freeze every note and pick none."""
    with pytest.raises(ValueError, match=option):
        explain_piece(model, tok, piece, **{option: value})


def test_predictions_are_consistent_and_decoded(model, tok, piece):
    df = explain_piece(model, tok, piece, top_k=4)
    for a in tok.attributes:
        assert (df[f"correct_{a}"] == (df[f"pred_{a}"] == df[f"true_{a}"])).all()
        for pred, topk, loss in zip(df[f"pred_{a}"], df[f"topk_{a}"], df[f"loss_{a}"], strict=False):
            assert len(topk) == 4 and topk[0][0] == pred
            probs = [p for _, p in topk]
            assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] <= 1
            assert loss > 0
    assert df.pred_pitch.between(22, 107).all()
    assert np.allclose(df.true_pitch, piece.pitch)
    assert np.allclose(df.true_duration * 8, np.round(df.true_duration * 8))  # quarters on the 1/32 grid
    assert np.allclose(df.true_duration, np.clip(np.round(piece.duration_q * 8), 1, 64) / 8)
    # loss = -log p(true) whenever the true value is in the top-k
    for v, topk, loss in zip(df.true_pitch, df.topk_pitch, df.loss_pitch, strict=False):
        for val, p in topk:
            if val == v:
                assert abs(-np.log(p) - loss) < 1e-4


def test_each_note_masked_once_batched_and_loss_matches_manual(model, tok, piece):
    spy = Spy(model).eval()
    df = explain_piece(spy, tok, piece, ratio=0.15, batch_size=64)
    N, K = len(piece), round(1 / 0.15)
    recov = [c for c in spy.calls if c[2] is not None]
    assert len(spy.calls) == 2 and len(recov) == 1  # one scoring pass, one batched recovery pass
    tokens, am, heads_at = recov[0]
    assert tokens.shape[0] == K
    assert torch.equal(heads_at.sum(0), torch.ones(N, dtype=torch.long))  # every note masked exactly once
    assert heads_at.sum(1).max() - heads_at.sum(1).min() <= 1  # ~ratio of the window per copy
    assert (tokens[heads_at] == MASK_ID).all() and (tokens[~heads_at] != MASK_ID).all()
    # recompute the copy that masks note 7 on its own
    r = int(heads_at[:, 7].nonzero()[0, 0])
    with torch.no_grad():
        out = model(tokens[r:r + 1], am[r:r + 1], heads=True)
    true = tok.encode(piece)[7]
    j = tok.attributes.index("pitch")
    lp = torch.log_softmax(out["logits"][j][0, 7], -1)[true[j]]
    assert abs(float(-lp) - df.loss_pitch[7]) < 1e-4
    assert not model.training


def test_long_piece_windows_and_seed(model, tmp_path, make_midi):
    tok = Tokenizer(TokenizerConfig(max_len=16, stride=12))
    notes = [(i * 240, 240, 48 + (i * 7) % 36) for i in range(50)]
    piece = tok.read(make_midi(tmp_path, notes, name="long.mid"))
    torch.manual_seed(0)
    m = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=16))
    spy = Spy(m)
    df = explain_piece(spy, tok, piece, batch_size=8)
    assert len(df) == 50 and df.loss_pitch.gt(0).all()
    n_windows = len(tok.windows(50))
    n_seqs = sum(c[0].shape[0] for c in spy.calls)
    assert n_seqs == n_windows * (1 + 7) and len(spy.calls) <= n_windows + n_windows * 7 // 8 + 2
    again = explain_piece(m, tok, piece, batch_size=8)
    assert again.drop(columns=[c for c in again if c.startswith("topk_")]).equals(
        df.drop(columns=[c for c in df if c.startswith("topk_")]))
    other = explain_piece(m, tok, piece, seed=1, batch_size=8)
    assert not np.allclose(other.loss_pitch, df.loss_pitch)
    # a model shorter than the tokenizer's windows gets its own windows
    short = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=10))
    tok_long = Tokenizer(TokenizerConfig(max_len=512))
    assert len(explain_piece(short, tok_long, tok_long.read(make_midi(tmp_path, notes, name="l2.mid")))) == 50


def test_freeze_book_and_errors(model, tok, piece):
    book = FreezeBook()
    book.register(3, len(piece))
    book.flags[3][[0, 5, 9]] = True
    df = explain_piece(model, tok, piece, freeze_book=book, piece_id=3)
    assert df.index[df.frozen].tolist() == [0, 5, 9]
    assert df.picked.sum() == round(0.15 * (len(piece) - 3)) and not (df.picked & df.frozen).any()
    with pytest.raises(ValueError, match="piece_id"):
        explain_piece(model, tok, piece, freeze_book=book)
    other = Tokenizer(TokenizerConfig(use_velocity=True))
    with pytest.raises(ValueError, match="does not match"):
        explain_piece(model, other, piece)
    empty = explain_piece(model, tok, piece.subset(np.zeros(0, dtype=np.int64)))
    assert len(empty) == 0 and "loss_pitch" in empty.columns


def test_recovery_accuracy_matches_validation(model, tok, tmp_path, make_midi):
    samples = []
    for k in range(5):
        notes = [(i * 240, 240, 50 + (i * (k + 2)) % 30) for i in range(12 + 3 * k)]
        p = tok.read(make_midi(tmp_path, notes, name=f"{k}.mid"))
        t = tok.encode(p)
        samples.append({"tokens": t, "note_ids": np.arange(len(t)), "piece_id": k, "window_start": 0})
    acc = recovery_accuracy(model, samples, batch_size=2)
    assert set(acc) == set(tok.attributes) and all(0 <= v <= 1 for v in acc.values())
    from smu_explain.datasets import collate
    batches = [collate(samples[i:i + 2]) for i in range(0, 5, 2)]
    v = validate(model, batches)
    assert acc == {a: v[f"acc_{a}"] for a in tok.attributes}
    assert recovery_accuracy(model, batches) == acc  # same masks from collated batches
    with pytest.raises(ValueError, match="no tokens"):
        recovery_accuracy(model, [])


def test_masker_view_equals_explain_columns(model, tmp_path, make_midi):
    tok = Tokenizer(TokenizerConfig(max_len=16, stride=10))
    notes = [(i * 240 + 1920, 240, 48 + (i * 5) % 36) for i in range(45)]  # starts after a bar of rest
    piece = tok.read(make_midi(tmp_path, notes, name="v.mid"))
    torch.manual_seed(1)
    m = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=16))
    full = explain_piece(m, tok, piece, ratio=0.2, freeze_top=0.25, batch_size=4)
    view = masker_view(m, tok, piece, ratio=0.2, freeze_top=0.25, batch_size=3)
    assert view.columns.tolist() == NOTE_COLUMNS + ["score", "picked", "frozen"]
    assert np.allclose(view.score, full.score, atol=1e-6)
    assert (view.picked == full.picked).all() and (view.frozen == full.frozen).all()
    # the true bar token is the one the model saw: the first note of the piece counts from its window's bar 0
    assert full.true_bar[0] == 0


def test_predict_piece_agrees_with_predict_task(tmp_path, make_midi):
    """The piece-level predictions (the app's downstream view) average the same windows as
    predict_task (the attribution path), for sequence and note tasks."""
    from smu_explain.attribution import predict_piece, predict_task
    from smu_explain.finetune import build_model

    TOK = Tokenizer(TokenizerConfig(max_len=16, stride=10))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "pre", MidiBert(ModelConfig.named("tiny", TOK.vocab_sizes, TOK.attributes, max_len=16)),
                    extra={"tokenizer": TOK.config})
    pre = tmp_path / "pre"
    piece = TOK.read(make_midi(tmp_path, [(i * 240, 240, 48 + (i * 5) % 30, 80) for i in range(40)], name="p.mid"))
    seq = build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=pre, seed=1).eval()
    res = predict_piece(seq, TOK, piece)
    ref = predict_task(seq, TOK, piece)
    np.testing.assert_allclose(res["probs"], ref["probs"], atol=1e-5)
    assert res["classes"][0][0] == ref["class"] and res["task"] == "emotion" and res["level"] == "sequence"
    note = build_model("melody", ["melody", "bridge", "piano"], pretrained=pre, seed=2).eval()
    res = predict_piece(note, TOK, piece)
    assert res["probs"].shape == (len(piece), 3) and len(res["notes"]) == len(piece)
    for t in (0, 12, 39):
        np.testing.assert_allclose(res["probs"][t], predict_task(note, TOK, piece, t)["probs"], atol=1e-5)
    assert res["notes"]["pred"].iloc[12] == predict_task(note, TOK, piece, 12)["class"]
    assert abs(sum(share for _, share in res["classes"]) - 1.0) < 1e-9


def test_the_torch_free_pick_rule_counts_as_the_training_masks_do():
    """picking.top_fraction (numpy, for the app) picks as many notes as masks.n_to_pick (torch, the
    training masks) for every count and ratio, ties at .5 included; importing it needs no torch."""
    import subprocess
    import sys

    from smu_explain.masks import n_to_pick
    from smu_explain.picking import top_fraction

    rng = np.random.default_rng(0)
    for n in range(0, 41):
        for frac in (0.0, 0.05, 0.1, 0.125, 0.15, 0.25, 0.3, 0.5, 0.75, 1.0):
            cand = np.ones(n, dtype=bool)
            want = int(n_to_pick(torch.tensor([n]), frac)[0])
            assert top_fraction(rng.random(n), cand, frac, at_least_one=True).sum() == want, (n, frac)
            assert top_fraction(rng.random(n), cand, frac, at_least_one=False).sum() == int(torch.round(
                torch.tensor(n * frac, dtype=torch.float64)))
    code = "import sys, smu_explain.picking; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_picks_at_is_explain_pieces_rule(model, tok, piece):
    """picks_at (what the app re-derives when the ratio moves) gives explain_piece's picked column
    from its score and frozen columns, ties included."""
    from smu_explain.picking import picks_at

    for ratio in (0.05, 0.15, 0.5):
        full = explain_piece(model, tok, piece, ratio=ratio)
        assert (picks_at(full.score, full.frozen, ratio) == full.picked.to_numpy()).all()
    tied = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.9])
    frozen = np.array([False, True, False, False, False, False])
    assert picks_at(tied, frozen, 0.5).tolist() == [True, False, False, False, False, True]  # round(2.5) = 2
    assert picks_at(tied, np.ones(6, dtype=bool), 0.5).tolist() == [False] * 6
