"""Counts on the real datasets (POP909, ASAP, EMOPIA, Pop1K7). Run: pytest -m data tests/test_data_real.py -s

Expected sizes come from shared/data/README.md (files per dataset, EMOPIA's
per-quadrant clip counts, MidiBERT's split sizes). Note totals are checked
loosely (the reader drops drums and pitches outside 22..107). Every test prints
what it measured.
"""

from __future__ import annotations

import numpy as np
import pytest

from smu_explain import corpora, datasets
from smu_explain.tokenizer import Tokenizer

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


@pytest.fixture(scope="module")
def encoded(tok):
    """Encode refs for a task (no cache: reading is a few ms per file)."""

    def get(refs, task):
        return datasets.encode_refs(refs, tok, task)

    return get


def _no_shared_groups(task):
    assert not corpora.shared_groups(task.splits), task.task


def _split_sizes(task):
    return {s: len(task.splits[s]) for s in corpora.SPLITS}


def _report(title, **kw):
    print(f"\n[{title}] " + "; ".join(f"{k}={v}" for k, v in kw.items()))


def test_pop909_melody_and_velocity(data_root, encoded):
    mel = corpora.melody_task(data_root, seed=0)
    assert sum(_split_sizes(mel).values()) == 909
    assert _split_sizes(mel) == {"train": 727, "val": 91, "test": 91}
    _no_shared_groups(mel)
    counts = {}
    for name, task in (("melody", mel), ("velocity", corpora.velocity_task(data_root, seed=0))):
        pieces, skipped = encoded(task.all_refs(), name)
        notes = sum(p.n_notes for p in pieces)
        lab = np.bincount(np.concatenate([p.note_labels for p in pieces]), minlength=len(task.classes))
        counts[name] = dict(zip(task.classes, lab.tolist(), strict=False))
        _report(f"POP909 {name}", pieces=len(pieces), notes=notes, skipped=skipped, labels=counts[name],
                splits=_split_sizes(task))
        assert len(pieces) + len(skipped) == 909 and len(skipped) <= 5
        assert 1.50e6 <= notes <= 1.56e6  # README: 1.53 M notes in the files
        assert lab.sum() == notes and (lab > 0).all()
    assert counts["melody"]["piano"] > counts["melody"]["melody"] > 0
    mb = corpora.melody_task(data_root, split="midibert")
    assert _split_sizes(mb) == {"train": 693, "val": 86, "test": 86}
    _no_shared_groups(mb)


def test_asap_composer(data_root, encoded):
    task = corpora.composer_task(data_root, seed=0, source="both")
    assert task.classes == ["Chopin", "Beethoven", "Bach", "Liszt", "Schubert", "Haydn", "Schumann", "Ravel"]
    _no_shared_groups(task)
    works = {s: {r.group for r in task.splits[s]} for s in corpora.SPLITS}
    for s in corpora.SPLITS:  # every composer has works in every split (stratified)
        assert {r.label for r in task.splits[s]} == set(range(8)), s
    pieces, skipped = encoded(task.all_refs(), "composer")
    per_class = np.bincount([p.label for p in pieces], minlength=8)
    n_scores = sum(r.annotations is None for r in task.all_refs())
    _report("ASAP composer (scores + re-timed performances)", files=len(task.all_refs()), scores=n_scores,
            pieces=len(pieces), notes=sum(p.n_notes for p in pieces), skipped=skipped,
            per_composer=dict(zip(task.classes, per_class.tolist(), strict=False)),
            split_files=_split_sizes(task), split_works={s: len(w) for s, w in works.items()})
    assert len(pieces) + len(skipped) == len(task.all_refs()) and len(skipped) <= 5
    everything = corpora.asap_refs(data_root, None, "both")
    assert len(everything) == 1302 and sum(r.annotations is None for r in everything) == 235


def test_emopia_emotion(data_root, encoded):
    task = corpora.emotion_task(data_root, seed=0)
    _no_shared_groups(task)
    refs = task.all_refs()
    assert len(refs) == 1078
    by_q = np.bincount([r.label for r in refs], minlength=4).tolist()
    assert by_q == [250, 265, 253, 310]  # README
    pieces, skipped = encoded(refs, "emotion")
    songs = {s: len({r.group for r in task.splits[s]}) for s in corpora.SPLITS}
    own = corpora.emotion_task(data_root, split="emopia")
    _no_shared_groups(own)
    mb = corpora.emotion_task(data_root, split="midibert")
    leak = corpora.shared_groups(mb.splits)
    _report("EMOPIA emotion", pieces=len(pieces), notes=sum(p.n_notes for p in pieces), skipped=skipped,
            quadrants=by_q, split_clips=_split_sizes(task), split_songs=songs,
            own_split=_split_sizes(own), midibert_split=_split_sizes(mb), midibert_songs_in_2_splits=len(leak))
    assert len(pieces) + len(skipped) == 1078 and len(skipped) <= 5
    assert 0.28e6 <= sum(p.n_notes for p in pieces) <= 0.30e6  # README: 0.29 M
    assert _split_sizes(mb) == {"train": 864, "val": 107, "test": 107}
    # EMOPIA's own lists name 1051 of the 1078 clips (27 are in none)
    rows = sum(len((data_root / "emopia" / "split_by_song" / f"{s}.csv").read_text().splitlines()) - 1
               for s in corpora.SPLITS)
    assert sum(_split_sizes(own).values()) == rows


def test_pop1k7(data_root, encoded):
    refs = corpora.pop1k7_refs(data_root)
    assert len(refs) == 1747
    pieces, skipped = encoded(refs, "pretrain")
    notes = sum(p.n_notes for p in pieces)
    _report("Pop1K7", pieces=len(pieces), notes=notes, skipped=skipped)
    assert len(pieces) + len(skipped) == 1747 and len(skipped) <= 5
    assert 2.23e6 <= notes <= 2.33e6  # README: 2.28 M


def test_pretrain_corpus_excludes_finetune_val_test(data_root, encoded):
    pre = corpora.pretrain_task(data_root, seed=0)
    names = {r.name for r in pre.all_refs()}
    groups = {r.group for r in pre.all_refs()}
    for task in (corpora.melody_task(data_root, seed=0), corpora.composer_task(data_root, seed=0),
                 corpora.emotion_task(data_root, seed=0)):
        held = [r for s in ("val", "test") for r in task.splits[s]]
        assert not ({r.name for r in held} & names) and not ({r.group for r in held} & groups), task.task
    _no_shared_groups(pre)
    pieces, skipped = encoded(pre.all_refs(), "pretrain")
    by_source = {}
    for p in pieces:
        by_source[p.source] = by_source.get(p.source, 0) + 1
    _report("pre-training corpus", files=_split_sizes(pre), pieces=len(pieces), by_source=by_source,
            notes=sum(p.n_notes for p in pieces), skipped=len(skipped))
    assert by_source["pop1k7"] >= 1740 and len(pieces) > 4000
