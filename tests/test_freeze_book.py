"""FreezeBook: the k / a / b rule, score averaging, batch lookup, seeding, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smu_explain.freeze_book import FreezeBook
from smu_explain.masker import make_strategy
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import N_SPECIAL, PAD_ID


def scores_for(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(float)  # distinct scores


def test_k_a_b_rule_exactly():
    book = FreezeBook(every=3, top=0.3, unfreeze=0.1, seed=7)
    n = 100
    s1 = scores_for(n, 0)
    calls = []
    for epoch in range(3):
        r = book.end_epoch(epoch, None, None) if epoch < 2 else None
        calls.append(r)
    assert calls[:2] == [None, None] and not book.due(0) and not book.due(1) and book.due(2)
    assert book.due(5) and not book.due(3) and not book.due(4)

    st = book.update(2, [(0, np.arange(n), s1)])
    f = book.frozen_notes(0)
    top30 = set(np.argsort(-s1)[:30].tolist())
    assert st["frozen_new"] == 30 and st["unfrozen"] == 3
    assert f.sum() == 27 and set(np.flatnonzero(f).tolist()) <= top30  # 30 frozen, 3 of them unfrozen

    s2 = scores_for(n, 1)
    before = f.copy()
    st = book.update(5, [(0, np.arange(n), s2)])
    sel = np.flatnonzero(~before)  # 73 still selectable
    k = round(0.3 * sel.size)  # 22
    newly = set(sel[np.argsort(-s2[sel])[:k]].tolist())
    f2 = book.frozen_notes(0)
    assert st["frozen_new"] == k == 22
    u = round(0.1 * (27 + 22))  # 5
    assert st["unfrozen"] == u and f2.sum() == 27 + 22 - u
    assert set(np.flatnonzero(f2).tolist()) <= (set(np.flatnonzero(before).tolist()) | newly)


def test_scores_averaged_over_windows_and_unscored_notes_not_candidates():
    book = FreezeBook(every=1, top=0.5, unfreeze=0.0)
    # note 2 appears twice: (10 + 0) / 2 = 5 -> below note 3 (6); notes 4.. never scored
    book.register(0, 10)
    book.update(0, [(0, [0, 1, 2], [1.0, 2.0, 10.0]), (0, [2, 3], [0.0, 6.0])])
    assert np.flatnonzero(book.frozen_notes(0)).tolist() == [2, 3]  # round(0.5 * 4) = 2: notes 3 (6) and 2 (5)
    assert len(book.frozen_notes(0)) == 10


def test_seeded_unfreezing():
    def run(seed):
        b = FreezeBook(every=1, top=0.5, unfreeze=0.5, seed=seed)
        b.update(0, [(3, np.arange(200), scores_for(200, 0))])
        return np.flatnonzero(b.frozen_notes(3))
    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_frozen_mask_lookup():
    book = FreezeBook()
    book.register(5, 8)
    book.flags[5][[1, 4, 7]] = True
    book.register(9, 3)
    B, L = 3, 6
    tokens = torch.full((B, L, 4), N_SPECIAL)
    note_ids = torch.tensor([[0, 1, 2, 3, 4, -1],      # piece 5 from note 0, last is padding
                             [4, 5, 6, 7, 8, 9],        # piece 5 from note 4 (8, 9 beyond the book)
                             [0, 1, 2, -1, -1, -1]])    # piece 9 (nothing frozen)
    tokens[0, 5] = PAD_ID
    batch = {"tokens": tokens, "piece_id": torch.tensor([5, 5, 9]), "note_ids": note_ids}
    fm = book.frozen_mask(batch)
    assert fm.dtype == torch.bool and fm.shape == (B, L)
    assert fm[0].nonzero().flatten().tolist() == [1, 4]
    assert fm[1].nonzero().flatten().tolist() == [0, 3]
    assert not fm[2].any()
    batch["piece_id"] = torch.tensor([42, 42, 42])  # unknown pieces: nothing frozen
    assert not book.frozen_mask(batch).any()


def test_state_dict_resume_equals_uninterrupted():
    def scored(epoch):
        return [(p, np.arange(50), scores_for(50, 100 * epoch + p)) for p in range(3)]

    a = FreezeBook(every=2, top=0.3, unfreeze=0.1, seed=3)
    for ep in (1, 3, 5):
        a.update(ep, scored(ep))
    b = FreezeBook(every=2, top=0.3, unfreeze=0.1, seed=3)
    for ep in (1, 3):
        b.update(ep, scored(ep))
    text = json.dumps(b.state_dict())  # plain JSON, no pickle
    c = FreezeBook()
    c.load_state_dict(json.loads(text))
    assert (c.every, c.top, c.unfreeze, c.seed) == (2, 0.3, 0.1, 3)
    c.update(5, scored(5))
    for p in range(3):
        assert np.array_equal(a.frozen_notes(p), c.frozen_notes(p))
    with pytest.raises(ValueError, match="freeze book"):
        FreezeBook().load_state_dict({"every": 2})


def test_end_epoch_scores_with_the_model_and_strategy_uses_book():
    torch.manual_seed(0)
    m = MidiBert(ModelConfig.named("tiny", [34, 34, 88, 66], ["bar", "position", "pitch", "duration"]))
    s = make_strategy("adversarial", freeze_every=2, freeze_top=0.3, unfreeze_frac=0.0)
    g = torch.Generator().manual_seed(0)
    L = 30
    tokens = torch.stack([torch.randint(N_SPECIAL, v, (2, L), generator=g) for v in [34, 34, 88, 66]], -1)
    am = torch.ones(2, L, dtype=torch.bool)
    batch = {"tokens": tokens, "attention_mask": am, "piece_id": torch.tensor([0, 1]),
             "note_ids": torch.arange(L).expand(2, L).clone()}
    assert s.end_epoch(0, m, [batch]) is None and s.freeze_book.n_frozen() == 0
    st = s.end_epoch(1, m, [batch])
    assert st["frozen_total"] == 2 * round(0.3 * L)
    m.eval()
    with torch.no_grad():
        sc = m.masker(m.encode(tokens, am))
    for b in range(2):  # exactly the top-scored notes of each piece
        expect = set(torch.argsort(sc[b], descending=True)[:9].tolist())
        assert set(np.flatnonzero(s.freeze_book.frozen_notes(b)).tolist()) == expect
    frozen = s.freeze_book.frozen_mask(batch)
    for seed in range(10):
        picked = s.select(m, batch, torch.Generator().manual_seed(seed))
        assert not (picked & frozen).any()
    _, stats = s.loss(m, batch)
    assert stats["frozen_in_batch"] == 18
