"""Fine-tuning: heads, mask fine-tuning, metrics, piece-level aggregation, save/load, a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smu_explain.checkpoint import load_model, save_checkpoint
from smu_explain.datasets import EncodedPiece, TokenDataset, collate
from smu_explain.errors import SMUCheckpointError, SMUInputError
from smu_explain.finetune import (
    FineTuneObjective,
    build_model,
    classification_scores,
    evaluate_model,
    finetune,
    mask_inputs,
    scores_from_predictions,
)
from smu_explain.heads import FineTuneModel
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import MASK_ID, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig
from smu_explain.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TOK = Tokenizer(TokenizerConfig(max_len=8))
PITCH = TOK.attributes.index("pitch")


def seq_dataset(n_pieces=12, notes=16, seed=0):
    """Class 0 pieces use low pitches, class 1 high ones: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    pieces = []
    for p in range(n_pieces):
        label = p % 2
        toks = np.stack([rng.integers(2, v, size=notes) for v in TOK.vocab_sizes], 1).astype(np.int64)
        toks[:, PITCH] = rng.integers(10, 30, size=notes) + (40 if label else 0)
        spans = np.array([[a, min(a + 8, notes)] for a in range(0, notes, 8)], dtype=np.int64)
        pieces.append(EncodedPiece(f"p{p}", f"g{p}", "synth", "", toks, spans, toks[spans[:, 0]].copy(),
                                   label=label))
    return TokenDataset(pieces, "sequence", ["low", "high"])


def note_dataset(n_pieces=4, notes=16, seed=0):
    rng = np.random.default_rng(seed)
    pieces = []
    for p in range(n_pieces):
        toks = np.stack([rng.integers(2, v, size=notes) for v in TOK.vocab_sizes], 1).astype(np.int64)
        spans = np.array([[0, 8], [4, 12], [8, 16]], dtype=np.int64)  # overlapping windows
        labels = (toks[:, PITCH] % 3).astype(np.int64)
        pieces.append(EncodedPiece(f"p{p}", f"g{p}", "synth", "", toks, spans, toks[spans[:, 0]].copy(),
                                   note_labels=labels))
    return TokenDataset(pieces, "note", ["melody", "bridge", "piano"])


def tiny_encoder(seed=0, attributes=None, vocab=None):
    torch.manual_seed(seed)
    return MidiBert(ModelConfig.named("tiny", vocab or TOK.vocab_sizes, attributes or TOK.attributes,
                                      max_len=16, dropout=0.0))


def test_heads_shapes_and_pooling_ignores_padding():
    ds = seq_dataset(4)
    batch = collate([ds[0], ds[1]])
    m = FineTuneModel(tiny_encoder(), "emotion", ["Q1", "Q2", "Q3", "Q4"]).eval()
    assert m(batch["tokens"], batch["attention_mask"])["logits"].shape == (2, 4)
    # a padded copy of sample 0: padding content must not change its logits
    tok = torch.cat([batch["tokens"][:1], torch.full((1, 3, len(TOK.attributes)), 5)], dim=1)
    am = torch.cat([batch["attention_mask"][:1], torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    tok2 = tok.clone()
    tok2[0, -3:] = 7
    # padded keys are excluded by the encoder; the pooling must also give them zero weight
    w = m.head.pool.weights(m.encoder.encode(tok, am), am)
    assert torch.all(w[0, -3:] == 0) and torch.allclose(w[0].sum(0), torch.ones(w.shape[-1]))
    torch.testing.assert_close(m(tok, am)["logits"], m(tok2, am)["logits"])
    nm = FineTuneModel(tiny_encoder(), "melody", ["melody", "bridge", "piano"]).eval()
    assert nm(batch["tokens"], batch["attention_mask"])["logits"].shape == (2, 8, 3)


def test_mask_inputs_exact_count_per_sample_and_sharding_invariant():
    ds = seq_dataset(4)
    full = collate([ds[i] for i in range(4)])
    idx = torch.arange(4)
    a = mask_inputs(full["tokens"], full["attention_mask"], 0.25, seed=1, step=3, sample_index=idx)
    masked = (a == MASK_ID).all(-1)
    assert masked.sum(1).tolist() == [2, 2, 2, 2]  # round(0.25 * 8)
    # the same sample masked in a different batch (another rank's shard) gets the same positions
    half = collate([ds[2], ds[3]])
    b = mask_inputs(half["tokens"], half["attention_mask"], 0.25, seed=1, step=3, sample_index=idx[2:])
    torch.testing.assert_close(b, a[2:])
    c = mask_inputs(full["tokens"], full["attention_mask"], 0.25, seed=1, step=4, sample_index=idx)
    assert not torch.equal(c, a)
    assert torch.equal(mask_inputs(full["tokens"], full["attention_mask"], 0.0, 1, 3, idx), full["tokens"])


def test_eval_masking_is_off_by_default():
    ds = seq_dataset(2)
    batch = collate([ds[0], ds[1]])
    batch["sample_index"] = torch.arange(2)
    obj = FineTuneObjective("sequence", 2)
    assert torch.equal(obj.inputs(batch, {"train": False, "seed": 0, "step": 0}), batch["tokens"])
    assert not torch.equal(obj.inputs(batch, {"train": True, "seed": 0, "step": 0}), batch["tokens"])
    on = FineTuneObjective("sequence", 2, eval_mask=True)
    x1 = on.inputs(batch, {"train": False, "seed": 0, "step": 5})
    x2 = on.inputs(batch, {"train": False, "seed": 0, "step": 9})
    assert torch.equal(x1, x2) and not torch.equal(x1, batch["tokens"])


def test_classification_scores_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    s = classification_scores(y, p, 4)
    assert s["acc"] == pytest.approx(4 / 6)
    assert s["confusion"][0] == [1, 1, 0, 0] and s["confusion"][2] == [1, 0, 1, 0]
    # F1: class0 2*1/(2+2)=0.5, class1 2*2/(2+3)=0.8, class2 2*1/(2+1)=2/3; class 3 absent
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_piece_level_prediction_averages_window_probabilities():
    pred = {"piece_id": np.array([0, 0, 0, 1]), "label": np.array([1, 1, 1, 0]),
            "probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]), "loss": np.array(0.5)}
    s = scores_from_predictions(pred, "sequence", 2)
    assert s["window_acc"] == pytest.approx(3 / 4)  # windows: wrong, right, right, right
    assert s["acc"] == 1.0 and s["n"] == 2  # piece 0 mean = (0.47, 0.53) -> 1
    # note level: a note in two windows counts once, with its mean probability
    npred = {"piece_id": np.array([0, 0, 0]), "note_id": np.array([5, 5, 6]), "label": np.array([1, 1, 0]),
             "probs": np.array([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1]]), "loss": np.array(0.1)}
    ns = scores_from_predictions(npred, "note", 2)
    assert ns["n"] == 2 and ns["acc"] == 1.0


def test_velocity_task_refuses_an_encoder_with_velocity_input():
    attrs = TOK.attributes + ["velocity"]
    enc = tiny_encoder(attributes=attrs, vocab=TOK.vocab_sizes + [34])
    with pytest.raises(SMUInputError, match="velocity must not be an input"):
        FineTuneModel(enc, "velocity", ["pp", "p", "mp", "mf", "f", "ff"])
    with pytest.raises(SMUInputError, match="3 classes"):
        FineTuneModel(tiny_encoder(), "melody", ["a", "b"])


def test_finetune_learns_saves_best_and_reloads(tmp_path):
    train, val, test = seq_dataset(12, seed=0), seq_dataset(4, seed=1), seq_dataset(4, seed=2)
    pre = tmp_path / "pre"
    save_checkpoint(pre, tiny_encoder(seed=3), extra={"tokenizer": TOK.config.to_dict()})
    model = build_model("folder", ["low", "high"], pretrained=pre, seed=0)
    torch.testing.assert_close(model.encoder.state_dict(), load_model(pre).state_dict())
    cfg = TrainConfig(steps=40, batch_size=4, lr=2e-3, eval_every=5, checkpoint_every=0, log_every=5,
                      out_dir=str(tmp_path / "ft"), seed=0)
    res = finetune("folder", model, train, val, cfg, test_set=test, patience=50)
    assert res["val"]["acc"] >= 0.99 and res["test"]["acc"] >= 0.99
    assert res["eval_mask"] is False and res["mask_finetune_ratio"] == 0.15
    assert "piece" in res["val"]["unit"] and 0 <= res["val"]["window_acc"] <= 1
    assert res["pretrained"] == str(pre)
    saved = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert saved["test"]["confusion"] == res["test"]["confusion"]
    back = load_model(tmp_path / "ft", kind="finetuned")
    assert back.classes == ["low", "high"] and back.task == "folder"
    again = evaluate_model(back, test)
    assert again["acc"] == res["test"]["acc"] and again["confusion"] == res["test"]["confusion"]
    assert (tmp_path / "ft" / "train" / "checkpoint.pt").is_file()


def test_note_task_runs_and_evaluates_each_note_once(tmp_path):
    train, val = note_dataset(4), note_dataset(2, seed=1)
    model = build_model("melody", ["melody", "bridge", "piano"], vocab_sizes=TOK.vocab_sizes,
                        attributes=TOK.attributes, size="tiny", max_len=16)
    cfg = TrainConfig(steps=4, batch_size=4, eval_every=2, checkpoint_every=0, out_dir=str(tmp_path / "m"))
    res = finetune("melody", model, train, val, cfg, eval_mask=True)
    assert res["val"]["n"] == 2 * 16  # 2 pieces x 16 notes, overlapping windows counted once
    assert res["eval_mask"] is True and res["val"]["eval_mask"] is True
    assert np.array(res["val"]["confusion"]).sum() == 32 and res["pretrained"] is None


def test_loading_refuses_wrong_or_missing_folders(tmp_path):
    pre = tmp_path / "pre"
    save_checkpoint(pre, tiny_encoder())
    with pytest.raises(SMUCheckpointError, match="not a fine-tuned model"):
        load_model(pre, kind="finetuned")
    with pytest.raises(SMUCheckpointError, match="not found"):
        load_model(tmp_path / "nope", kind="finetuned")
    with pytest.raises(SMUInputError, match="validation"):
        finetune("folder", build_model("folder", ["a", "b"], vocab_sizes=TOK.vocab_sizes,
                                       attributes=TOK.attributes, size="tiny", max_len=16),
                 seq_dataset(4), None, TrainConfig(steps=1, batch_size=2, out_dir=str(tmp_path / "x")))
