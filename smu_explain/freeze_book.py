"""The freeze book of the adversarial strategy: notes the masker may not pick for a while.

FreezeBook (METHOD.md 5): one flag per note of each training piece. After every
``every`` (15) epochs: freeze the top ``top`` (30%) of the still-selectable notes
of each piece by masker score (scores of a note seen in several windows are
averaged), then unfreeze a random ``unfreeze`` (10%) of that piece's frozen
notes (RNG seeded by (seed, epoch, piece id), so a resumed run repeats it).
``iter_masker_scores`` runs the masker over a loader for it. Imports numpy, torch, ``model``
(``unwrap``) and ``masks`` (``attention_mask_of``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .masks import attention_mask_of
from .model import unwrap


class FreezeBook:
    """Per-piece, per-note "frozen" flags (frozen notes are never masked).

    Keys are piece ids (ints, ``batch['piece_id']``); values are numpy bool arrays
    indexed by note index in the piece (``batch['note_ids']``, -1 on padding).
    ``state_dict()`` is plain JSON (frozen note indices per piece), no pickle.
    """

    def __init__(self, every: int = 15, top: float = 0.3, unfreeze: float = 0.1, seed: int = 0):
        if every < 1 or not 0 <= top <= 1 or not 0 <= unfreeze <= 1:
            raise ValueError("FreezeBook needs every >= 1 and top, unfreeze in [0, 1]")
        self.every, self.top, self.unfreeze, self.seed = int(every), float(top), float(unfreeze), int(seed)
        self.flags: dict[int, np.ndarray] = {}
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.flags)

    def n_frozen(self) -> int:
        return int(sum(int(f.sum()) for f in self.flags.values()))

    def frozen_notes(self, piece_id: int) -> np.ndarray:
        """Bool array of the piece's notes (empty if the piece was never seen)."""
        return self.flags.get(int(piece_id), np.zeros(0, dtype=bool)).copy()

    def register(self, piece_id: int, n_notes: int) -> None:
        """Make sure the piece has a flag for each of its ``n_notes`` notes."""
        self._ensure(int(piece_id), int(n_notes))

    def _ensure(self, pid: int, n: int) -> np.ndarray:
        f = self.flags.get(pid)
        if f is None or len(f) < n:
            new = np.zeros(n, dtype=bool)
            if f is not None:
                new[: len(f)] = f
            self.flags[pid] = f = new
        return f

    def frozen_mask(self, batch: dict) -> torch.Tensor:
        """(B, L) bool on the batch's device: True where the token's note is frozen."""
        note_ids = batch.get("note_ids")
        ref = batch["tokens"]
        B, L = ref.shape[:2]
        if note_ids is None or batch.get("piece_id") is None or not self.flags:
            return torch.zeros((B, L), dtype=torch.bool, device=ref.device)
        ids = note_ids.detach().cpu().numpy()
        out = np.zeros((B, L), dtype=bool)
        for b, pid in enumerate(batch["piece_id"].tolist()):
            f = self.flags.get(int(pid))
            if f is None:
                continue
            row = ids[b]
            ok = (row >= 0) & (row < len(f))
            out[b, ok] = f[row[ok]]
        return torch.from_numpy(out).to(ref.device)

    # ------------------------------------------------------------ updates
    def due(self, epoch: int) -> bool:
        """True after epochs every-1, 2*every-1, ... (0-based index of the finished epoch)."""
        return (int(epoch) + 1) % self.every == 0

    def update(self, epoch: int, scored: Iterable[tuple[int, Any, Any]]) -> dict[str, float]:
        """Apply the freeze rule now from (piece_id, note_ids, scores) triples.

        Scores of a note that appears several times (overlapping windows) are
        averaged; notes that were never scored are not candidates. Per piece:
        freeze round(top * #selectable) highest-scoring selectable notes, then
        unfreeze round(unfreeze * #frozen) random frozen notes.
        """
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, np.ndarray] = {}
        for pid, note_ids, scores in scored:
            pid = int(pid)
            ids = np.asarray(_np(note_ids), dtype=np.int64).reshape(-1)
            sc = np.asarray(_np(scores), dtype=np.float64).reshape(-1)
            if ids.shape != sc.shape:
                raise ValueError(f"piece {pid}: {ids.size} note ids but {sc.size} scores")
            ok = ids >= 0
            ids, sc = ids[ok], sc[ok]
            if ids.size == 0:
                continue
            n = int(ids.max()) + 1
            self._ensure(pid, n)
            s, c = sums.get(pid), counts.get(pid)
            if s is None or len(s) < len(self.flags[pid]):
                s2 = np.zeros(len(self.flags[pid])); c2 = np.zeros(len(self.flags[pid]))
                if s is not None:
                    s2[: len(s)] = s; c2[: len(c)] = c
                s, c = s2, c2
            np.add.at(s, ids, sc)
            np.add.at(c, ids, 1)
            sums[pid], counts[pid] = s, c
        n_froze = n_unfroze = 0
        for pid in sorted(sums):
            f = self.flags[pid]
            c = counts[pid]
            mean = np.where(c > 0, sums[pid] / np.maximum(c, 1), -np.inf)
            sel = np.flatnonzero(~f & (c > 0))
            k = int(round(self.top * sel.size))
            if k > 0:
                order = np.argsort(-mean[sel], kind="stable")[:k]
                f[sel[order]] = True
                n_froze += k
            frozen = np.flatnonzero(f)
            u = int(round(self.unfreeze * frozen.size))
            if u > 0:
                rng = np.random.default_rng([self.seed, int(epoch), pid])
                f[rng.choice(frozen, size=u, replace=False)] = False
                n_unfroze += u
        total = sum(len(f) for f in self.flags.values())
        stats = {"epoch": int(epoch), "pieces": len(sums), "frozen_new": n_froze, "unfrozen": n_unfroze,
                 "frozen_total": self.n_frozen(), "frozen_frac": self.n_frozen() / max(total, 1)}
        self.history.append(stats)
        return stats

    @torch.no_grad()
    def end_epoch(self, epoch: int, model, loader: Iterable[dict]) -> dict[str, float] | None:
        """If ``epoch`` (0-based, just finished) is due, score every training piece with
        the masker (eval mode, no grad) and apply ``update``. Returns its stats or None."""
        if not self.due(epoch):
            return None
        return self.update(epoch, iter_masker_scores(model, loader))

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "top": self.top, "unfreeze": self.unfreeze, "seed": self.seed,
                "n_notes": {str(p): int(len(f)) for p, f in self.flags.items()},
                "frozen": {str(p): np.flatnonzero(f).tolist() for p, f in self.flags.items()},
                "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.every, self.top = int(state["every"]), float(state["top"])
            self.unfreeze, self.seed = float(state["unfreeze"]), int(state["seed"])
            flags = {}
            for p, n in state["n_notes"].items():
                f = np.zeros(int(n), dtype=bool)
                f[np.asarray(state["frozen"].get(p, []), dtype=np.int64)] = True
                flags[int(p)] = f
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"invalid freeze book state: {e!r}") from None
        self.flags = flags
        self.history = list(state.get("history", []))


def _np(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


@torch.no_grad()
def iter_masker_scores(model, loader: Iterable[dict]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (piece_id, note_ids, masker scores) of every real token, model in eval mode."""
    m = unwrap(model)
    device = next(m.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            tokens = batch["tokens"].to(device)
            am = attention_mask_of({"tokens": tokens, "attention_mask": batch.get("attention_mask")}).to(device)
            scores = torch.sigmoid(model(tokens, am, masker=True)["masker_logits"]).float().cpu().numpy()
            ids = batch["note_ids"].cpu().numpy()
            amn = am.cpu().numpy()
            for b, pid in enumerate(batch["piece_id"].tolist()):
                ok = amn[b] & (ids[b] >= 0)
                yield int(pid), ids[b][ok], scores[b][ok]
    finally:
        model.train(was_training)
