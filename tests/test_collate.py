"""TokenDataset samples and datasets.collate: padding, masks, labels, ids, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smu_explain import corpora, datasets
from smu_explain.tokenizer import N_SPECIAL, PAD_ID, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig


def _piece(name, n, max_len, tok, label=None, n_classes=3, seed=0):
    """An EncodedPiece of n random notes windowed by the tokenizer (no MIDI needed)."""
    rng = np.random.default_rng(seed)
    tokens = np.stack([rng.integers(N_SPECIAL, v, n) for v in tok.vocab_sizes], axis=1).astype(np.int64)
    spans, first = datasets.window_spans(tok, None, tokens)
    note_labels = rng.integers(0, n_classes, n) if label is None else None
    return datasets.EncodedPiece(name, name, "test", name, tokens, spans, first, note_labels, label)


@pytest.fixture
def tok():
    return Tokenizer(TokenizerConfig(max_len=5, stride=5))


def test_note_task_batch(tok):
    pieces = [_piece("a", 7, 5, tok, seed=1), _piece("b", 3, 5, tok, seed=2)]
    ds = datasets.TokenDataset(pieces, "note", ["x", "y", "z"])
    assert len(ds) == 3  # a: windows 0-5, 5-7; b: 0-3
    batch = datasets.collate([ds[1], ds[0], ds[2]])
    assert set(batch) == {"tokens", "attention_mask", "labels", "piece_id", "note_ids", "window_start"}
    B, L, A = batch["tokens"].shape
    assert (B, L, A) == (3, 5, 4) and batch["tokens"].dtype == torch.long
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].sum(1).tolist() == [2, 5, 3]
    pad = ~batch["attention_mask"]
    assert (batch["tokens"][pad] == PAD_ID).all()
    assert (batch["labels"][pad] == -100).all() and (batch["labels"][~pad] >= 0).all()
    assert (batch["note_ids"][pad] == -1).all()
    assert batch["piece_id"].tolist() == [0, 0, 1]
    assert batch["window_start"].tolist() == [5, 0, 0]
    assert batch["note_ids"][0, :2].tolist() == [5, 6]
    # labels point back at the piece's notes; window tokens too, except the re-based bar
    a = pieces[0]
    assert batch["labels"][0, :2].tolist() == a.note_labels[5:7].tolist()
    assert torch.equal(batch["tokens"][0, 1], torch.from_numpy(a.tokens[6]))
    assert batch["tokens"][0, 0, tok.index["bar"]] == N_SPECIAL


def test_sequence_task_batch(tok):
    pieces = [_piece("a", 6, 5, tok, label=2), _piece("b", 2, 5, tok, label=0)]
    ds = datasets.TokenDataset(pieces, "sequence", ["p", "q", "r"])
    batch = datasets.collate([ds[i] for i in range(len(ds))])
    assert batch["labels"].shape == (3,) and batch["labels"].tolist() == [2, 2, 0]
    assert batch["tokens"].shape[:2] == (3, 5)
    assert ds.label_counts() == {"p": 1, "q": 0, "r": 1}


def test_pretrain_batch_has_no_labels_and_extra_keys_stack(tok):
    ds = datasets.TokenDataset([_piece("a", 4, 5, tok, label=None)], "pretrain")
    items = [dict(ds[0], sample_index=7)]
    batch = datasets.collate(items)
    assert "labels" not in batch and batch["sample_index"].tolist() == [7]


def test_collate_errors(tok):
    with pytest.raises(ValueError):
        datasets.collate([])
    a = datasets.TokenDataset([_piece("a", 4, 5, tok)], "note", ["x", "y", "z"])[0]
    b = datasets.TokenDataset([_piece("b", 4, 5, tok, label=None)], "pretrain")[0]
    with pytest.raises(ValueError, match="some samples have labels"):
        datasets.collate([a, b])


def test_augmentation_deterministic_per_epoch_and_pitch_only(tok):
    pieces = [_piece("a", 5, 5, tok, seed=3)]
    aug = datasets.TokenDataset(pieces, "note", ["x", "y", "z"], tokenizer=tok, augment=True, seed=5)
    plain = datasets.TokenDataset(pieces, "note", ["x", "y", "z"])
    x0 = aug[0]["tokens"]
    assert torch.equal(x0, aug[0]["tokens"])  # same (seed, epoch, index) -> same shift
    shifts = set()
    for epoch in range(12):
        aug.set_epoch(epoch)
        t = aug[0]["tokens"]
        diff = (t - plain[0]["tokens"])
        j = tok.index["pitch"]
        assert (diff[:, [k for k in range(t.shape[1]) if k != j]] == 0).all()
        assert len(set(diff[:, j].tolist())) == 1
        shifts.add(int(diff[0, j]))
    assert len(shifts) > 1 and all(-6 <= s <= 5 for s in shifts)
    with pytest.raises(ValueError, match="tokenizer"):
        datasets.TokenDataset(pieces, "note", augment=True)


def test_build_datasets_augments_train_only(tmp_path, make_midi):
    d = tmp_path / "m"
    for k in range(10):
        make_midi(d, [(i * 240, 240, 60 + i, 80) for i in range(6)], name=f"{k}.mid")
    (tmp_path / "l.csv").write_text("file,label\n" + "".join(f"{k}.mid,{'ab'[k % 2]}\n" for k in range(10)))
    tok = Tokenizer(TokenizerConfig(max_len=4))
    built = datasets.build_datasets(corpora.folder_task(d, tmp_path / "l.csv"), tok, None, augment_train=True)
    assert built.datasets["train"].augment
    assert not built.datasets["val"].augment and not built.datasets["test"].augment
    loader = torch.utils.data.DataLoader(built.datasets["train"], batch_size=3, collate_fn=datasets.collate)
    batch = next(iter(loader))
    assert batch["tokens"].shape == (3, 4, 4) and batch["labels"].shape == (3,)
