"""Task datasets on fake POP909 / ASAP / EMOPIA / Pop1K7 layouts made in tmp_path.

Proves: label mapping, split determinism and group integrity, MidiBERT/EMOPIA
split options, the pre-training corpus keeps fine-tuning val/test out, ASAP
re-timing, the token cache (hits, invalidation, atomic files, no pickles),
skip-and-report, the folder+CSV builder's errors, save/load, and ``smu tokenize``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from smu_explain import cli, corpora, datasets, retiming
from smu_explain.errors import SMUInputError
from smu_explain.tokenizer import N_SPECIAL, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

TPQ = 480


def _pop_song(make_midi, root: Path, sid: str, seed: int, names=("MELODY", "BRIDGE", "PIANO")):
    rng = np.random.default_rng(seed)
    tracks = []
    for k, name in enumerate(names):
        notes = [(i * 480 + k * 120, 240, 60 + k * 5 + int(rng.integers(0, 5)), int(v))
                 for i, v in enumerate(rng.integers(1, 128, 6 + k))]
        tracks.append({"notes": notes, "name": name})
    return make_midi(root / "pop909" / "POP909" / sid, name=f"{sid}.mid", tracks=tracks)


def _write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _annotations(path: Path, times, kinds):
    path.write_text("".join(f"{t}\t{t}\t{k}\n" for t, k in zip(times, kinds, strict=False)))


# composers and their works: counts of performances decide the top composers
ASAP = {
    "Bach": {"Fugue/bwv_1": 2, "Fugue/bwv_2": 2, "Prelude/bwv_3": 2, "Prelude/bwv_4": 1},
    "Chopin": {"Ballade/1": 3, "Etude/2": 2, "Etude/3": 1},
    "Liszt": {"Sonata": 1},
}


@pytest.fixture
def fake_root(tmp_path, make_midi) -> Path:
    root = tmp_path / "data"
    # POP909: 20 songs
    for i in range(1, 21):
        _pop_song(make_midi, root, f"{i:03d}", i)
    # MidiBERT's lists (a subset, like the 865 4/4 songs)
    (root / "splits_midibert").mkdir(parents=True)
    (root / "splits_midibert" / "pop909.json").write_text(json.dumps(
        {"train": [f"{i:03d}.mid" for i in range(1, 13)], "valid": ["013.mid", "014.mid"],
         "test": ["015.mid", "016.mid"], "qual_pieces_4_4": []}))
    # ASAP
    rows = []
    for comp, works in ASAP.items():
        for work, n_perf in works.items():
            folder = f"{comp}/{work}"
            d = root / "asap" / folder
            make_midi(d, [(i * 480, 480, 60 + i % 7, 80) for i in range(8)], name="midi_score.mid")
            for p in range(n_perf):
                # performance at 100 qpm (0.6 s per beat) starting at 0.3 s
                make_midi(d, [(round((0.3 + i * 0.6) * 2 * TPQ), 480, 60 + i % 7, 70) for i in range(8)],
                          name=f"P{p}.mid", tempo_changes=[(0, 120)])
                _annotations(d / f"P{p}_annotations.txt", [0.3 + 0.6 * k for k in range(9)],
                             ["db,4/4,0", "b", "b", "b", "db", "b", "b", "b", "db"])
                rows.append([comp, work, folder, f"{folder}/midi_score.mid", f"{folder}/P{p}.mid",
                             f"{folder}/P{p}_annotations.txt"])
    _write_csv(root / "asap" / "metadata.csv",
               ["composer", "title", "folder", "midi_score", "midi_performance", "performance_annotations"],
               [[r[0], r[1].replace("/", "_"), r[2], r[3], r[4], r[5]] for r in rows])
    # EMOPIA: 12 songs x 2 clips, one song ID containing '_'
    songs = [f"song{k}" for k in range(11)] + ["L3_Tad"]
    names = []
    for k, song in enumerate(songs):
        for clip in range(2):
            q = f"Q{k % 4 + 1}"
            name = f"{q}_{song}_{clip}"
            names.append(name)
            make_midi(root / "emopia" / "midis", [(i * 240, 240, 50 + i + k, 90) for i in range(6)],
                      name=f"{name}.mid")
    (root / "emopia" / "midis" / "README.mid.txt").write_text("not a clip")
    own = {"train": names[:16], "val": names[16:20], "test": names[20:]}
    for s, ns in own.items():
        _write_csv(root / "emopia" / "split_by_song" / f"{s}.csv", ["fname", "label"],
                   [[n, n[:2]] for n in ns])
    (root / "splits_midibert" / "emopia.json").write_text(json.dumps(
        {"train": names[:18], "valid": names[18:21], "test": names[21:]}))
    # Pop1K7
    for k in range(5):
        make_midi(root / "pop1k7" / "midi_analyzed" / "src_001", [(i * 240, 240, 60 + i, 80) for i in range(5)],
                  name=f"{k}.mid")
    return root


@pytest.fixture
def tok():
    return Tokenizer(TokenizerConfig(max_len=4))


# ----------------------------------------------------------------------------- roots
def test_data_root_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SMU_DATA_ROOT", str(tmp_path))
    assert corpora.data_root() == tmp_path
    monkeypatch.delenv("SMU_DATA_ROOT")
    assert corpora.data_root() == corpora.REPO_ROOT.parent / "shared" / "data"
    assert corpora.data_root(tmp_path / "x") == tmp_path / "x"


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(SMUInputError, match="POP909"):
        corpora.pop909_refs(tmp_path)
    with pytest.raises(SMUInputError, match="metadata.csv"):
        corpora.asap_metadata(tmp_path)


# ----------------------------------------------------------------------------- labels
def test_velocity_bins_match_midibert_edges():
    v = np.array([0, 1, 31, 32, 47, 48, 63, 64, 79, 80, 95, 96, 127])
    assert corpora.velocity_bins(v).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert corpora.VELOCITY_CLASSES == ["pp", "p", "mp", "mf", "f", "ff"]


def test_melody_labels_follow_track_names(fake_root, tok):
    ref = corpora.pop909_refs(fake_root)[0]
    piece = corpora.read_ref(ref, tok)
    labels = corpora.melody_note_labels(piece, ref.path)
    for t, name in enumerate(piece.track_names):
        sel = piece.track == t
        assert sel.any()
        assert set(labels[sel].tolist()) == {["MELODY", "BRIDGE", "PIANO"].index(name)}
    enc = datasets.encode_ref(ref, tok, "melody")
    assert np.array_equal(enc.note_labels, labels)


def test_melody_unknown_track_is_skipped_and_reported(fake_root, make_midi, tok):
    bad = _pop_song(make_midi, fake_root, "021", 99, names=("MELODY", "GUITAR", "PIANO"))
    refs = corpora.pop909_refs(fake_root)
    pieces, skipped = datasets.encode_refs(refs, tok, "melody")
    assert len(pieces) == 20
    assert skipped == [(str(bad), "track(s) ['GUITAR'] are not MELODY/BRIDGE/PIANO")]


def test_velocity_labels_and_velocity_input_refused(fake_root, tok):
    ref = corpora.pop909_refs(fake_root)[3]
    piece = corpora.read_ref(ref, tok)
    enc = datasets.encode_ref(ref, tok, "velocity")
    assert np.array_equal(enc.note_labels, corpora.velocity_bins(piece.velocity))
    with_vel = Tokenizer(TokenizerConfig(use_velocity=True))
    with pytest.raises(ValueError, match="velocity must not be an input"):
        datasets.encode_refs([ref], with_vel, "velocity")
    assert "velocity" not in datasets.make_tokenizer("velocity").attributes


def test_emopia_names():
    assert corpora.parse_emopia_name("Q2_L3_TadjSQQ0_0.mid") == ("Q2", "L3_TadjSQQ0", "0")
    assert corpora.parse_emopia_name("Q4_abc_12") == ("Q4", "abc", "12")
    for bad in ("Q5_abc_1.mid", "abc.mid", "Q1_abc_x.mid", "Q1_1.mid"):
        with pytest.raises(SMUInputError):
            corpora.parse_emopia_name(bad)


def test_emopia_labels_and_song_groups(fake_root):
    refs, skipped = corpora.emopia_refs(fake_root)
    assert len(refs) == 24 and skipped == []  # the .txt is not globbed
    r = next(r for r in refs if "L3_Tad" in r.name)
    assert r.group == "L3_Tad" and corpora.EMOTION_CLASSES[r.label] == r.path.name[:2]


def test_asap_top_composers_and_work_groups(fake_root):
    rows = corpora.asap_metadata(fake_root)
    assert corpora.asap_top_composers(rows, 2) == ["Bach", "Chopin"]  # 7 and 6 performances
    refs = corpora.asap_refs(fake_root, ["Bach", "Chopin"], "both")
    scores = [r for r in refs if r.annotations is None]
    perfs = [r for r in refs if r.annotations is not None]
    assert len(scores) == 7 and len(perfs) == 13
    assert all(r.group == "asap/" + str(Path(r.name).parent.relative_to("asap")) for r in refs)
    assert {r.label for r in refs if r.group.startswith("asap/Chopin")} == {1}
    assert len(corpora.asap_refs(fake_root, ["Bach"], "score")) == 4
    with pytest.raises(ValueError):
        corpora.asap_refs(fake_root, None, "audio")


# ----------------------------------------------------------------------------- splits
def test_split_groups_deterministic_and_sized():
    groups = [f"g{i}" for i in range(100)]
    a = corpora.split_groups(groups, seed=3)
    assert a == corpora.split_groups(list(reversed(groups)), seed=3)
    assert a != corpora.split_groups(groups, seed=4)
    counts = {s: sum(v == s for v in a.values()) for s in corpora.SPLITS}
    assert counts == {"train": 80, "val": 10, "test": 10}


def test_split_groups_stratified_small_strata():
    strata = {f"a{i}": "A" for i in range(3)} | {f"b{i}": "B" for i in range(20)} | {"c0": "C"}
    a = corpora.split_groups(strata.keys(), seed=0, strata=strata)
    for s in ("A", "B"):
        got = {a[g] for g in strata if strata[g] == s}
        assert got == {"train", "val", "test"}, s
    assert a["c0"] == "train"


def test_split_groups_rejects_bad_fractions():
    with pytest.raises(ValueError):
        corpora.split_groups(["a"], fractions=(0.5, 0.1, 0.1))


def _groups_by_split(task):
    return {s: {r.group for r in task.splits[s]} for s in corpora.SPLITS}


@pytest.mark.parametrize("build", [
    lambda root: corpora.melody_task(root, seed=1),
    lambda root: corpora.composer_task(root, seed=1, n_composers=2),
    lambda root: corpora.emotion_task(root, seed=1),
    lambda root: corpora.emotion_task(root, split="emopia"),
    lambda root: corpora.pretrain_task(root, seed=1),
    lambda root: corpora.pretrain_task(root, emopia_split="midibert"),
])
def test_no_group_in_two_splits_and_determinism(fake_root, build):
    task = build(fake_root)
    g = _groups_by_split(task)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    again = build(fake_root)
    assert {s: [r.name for r in v] for s, v in task.splits.items()} == \
           {s: [r.name for r in v] for s, v in again.splits.items()}


def test_pop909_midibert_split_uses_the_lists(fake_root):
    task = corpora.melody_task(fake_root, split="midibert")
    assert [r.group for r in task.splits["val"]] == ["013", "014"]
    assert [r.group for r in task.splits["test"]] == ["015", "016"]
    assert len(task.splits["train"]) == 12  # songs 017..020 are in no list
    with pytest.raises(ValueError):
        corpora.melody_task(fake_root, split="emopia")


def test_emopia_midibert_split_is_clip_level_and_flagged(fake_root):
    task = corpora.emotion_task(fake_root, split="midibert")
    assert [r.path.stem for r in task.splits["val"]] == \
        json.loads((fake_root / "splits_midibert" / "emopia.json").read_text())["valid"]
    assert corpora.shared_groups(task.splits) == {"song10"}
    assert "1 songs have clips in more than one split" in task.split_info
    pre = corpora.pretrain_task(fake_root, emopia_split="midibert")
    held = {r.group for s in ("val", "test") for r in task.splits[s]}
    assert not (held & {r.group for r in pre.all_refs() if r.source == "emopia"})


def test_emopia_own_split(fake_root):
    task = corpora.emotion_task(fake_root, split="emopia")
    assert len(task.splits["train"]) == 16 and len(task.splits["val"]) == 4
    assert task.splits["test"][0].path.stem.endswith("_0")


def test_asap_composer_split_is_by_work(fake_root):
    task = corpora.composer_task(fake_root, seed=0, n_composers=2, source="both")
    assert task.classes == ["Bach", "Chopin"]
    work_of = {}
    for s in corpora.SPLITS:
        for r in task.splits[s]:
            assert work_of.setdefault(r.group, s) == s
    assert all(len(task.splits[s]) for s in corpora.SPLITS)


def test_pretrain_keeps_finetune_val_test_out(fake_root):
    pre = corpora.pretrain_task(fake_root, seed=2, n_composers=2)
    names = {r.name for s in corpora.SPLITS for r in pre.splits[s]}
    pop = corpora.melody_task(fake_root, seed=2)
    emo = corpora.emotion_task(fake_root, seed=2)
    comp = corpora.composer_task(fake_root, seed=2, n_composers=2)
    for task in (pop, emo, comp):
        held = {r.name for s in ("val", "test") for r in task.splits[s]}
        assert held and not (held & names), task.task
        assert {r.name for r in task.splits["train"]} <= names
    assert {r.name for r in corpora.pop1k7_refs(fake_root)} <= names
    assert any(r.name.startswith("asap/Liszt") for r in pre.all_refs())  # other composers kept
    assert pre.splits["test"] == [] and pre.splits["val"]
    assert all(r.label is None for r in pre.all_refs())


def test_pretrain_with_midibert_split_holds_out_their_lists(fake_root):
    pre = corpora.pretrain_task(fake_root, pop909_split="midibert", emopia_split="midibert")
    groups = {r.group for r in pre.all_refs()}
    assert not ({"013", "014", "015", "016"} & groups)
    assert {"017", "020"} <= groups  # songs outside MidiBERT's lists are free to use


# ----------------------------------------------------------------------------- ASAP re-timing
def test_beat_quarters_bars_pickups_and_metre_changes():
    # 1-beat pickup, a 3/4 bar, then a 6/8 bar annotated with 2 beats
    down = np.array([0, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    q, ts = retiming.beat_quarters(down, {1: (3, 4), 4: (6, 8)})
    assert q.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 9.0, 10.5]
    assert ts == [(0.0, 3, 4), (6.0, 6, 8)]
    q, ts = retiming.beat_quarters(np.array([1, 0, 1, 0], dtype=bool), {0: (2, 2)})
    assert q.tolist() == [0.0, 2.0, 4.0, 6.0] and ts == [(0.0, 2, 2)]
    # a metre change on the last bar: its beat is the new metre's (6/8 -> dotted quarter)
    q, ts = retiming.beat_quarters(np.array([1, 0, 0, 0, 1, 0, 0], dtype=bool), {0: (4, 4), 4: (6, 8)})
    assert q.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.5, 7.0] and ts == [(0.0, 4, 4), (4.0, 6, 8)]


def test_read_beat_annotations_errors(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("1.0\t1.0\tdb,4/4\n0.5\t0.5\tb\n")
    with pytest.raises(SMUInputError, match="do not increase"):
        retiming.read_beat_annotations(p)
    p.write_text("1.0\t1.0\n")
    with pytest.raises(SMUInputError, match="3 tab-separated"):
        retiming.read_beat_annotations(p)


def test_retimed_performance_lands_on_the_beat_grid(fake_root, tok):
    ref = next(r for r in corpora.asap_refs(fake_root, ["Bach"], "performance"))
    piece = corpora.read_ref(ref, tok)
    # the fake performance plays one note per annotated beat, 0.6 s apart
    assert np.allclose(piece.onset_q, np.arange(8))
    assert piece.bar.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    score = corpora.read_ref(corpora.PieceRef(ref.path.parent / "midi_score.mid", "s", "g", "asap"), tok)
    assert np.array_equal(tok.encode(piece)[:, :3], tok.encode(score)[:, :3])


# ----------------------------------------------------------------------------- cache
def test_cache_hits_and_invalidation(fake_root, tmp_path, make_midi):
    cache = datasets.TokenCache(tmp_path / "cache")
    ref = corpora.pop909_refs(fake_root)[0]
    tok = Tokenizer(TokenizerConfig(max_len=4))
    a = datasets.encode_ref(ref, tok, "melody", cache)
    assert (cache.hits, cache.misses) == (0, 1)
    b = datasets.encode_ref(ref, tok, "melody", cache)
    assert (cache.hits, cache.misses) == (1, 1)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.spans, b.spans)
    entry = cache.path_for(ref, tok)
    assert entry.is_file() and not list(entry.parent.glob("*.tmp"))
    with np.load(entry, allow_pickle=False) as z:  # no object arrays inside
        assert {"tokens", "win_spans", "win_first", "velocity", "track", "track_names"} <= set(z.files)
    # tokenizer config change -> miss
    datasets.encode_ref(ref, Tokenizer(TokenizerConfig(max_len=8)), "melody", cache)
    assert cache.misses == 2
    # file content change -> miss, and the new content is what comes back
    _pop_song(make_midi, fake_root, "001", 1234)
    c = datasets.encode_ref(ref, tok, "melody", cache)
    assert cache.misses == 3
    assert c.n_notes != a.n_notes or not np.array_equal(c.tokens, a.tokens)
    # a corrupt entry is ignored and rewritten
    entry = cache.path_for(ref, tok)
    entry.write_bytes(b"garbage")
    d = datasets.encode_ref(ref, tok, "melody", cache)
    assert cache.misses == 4 and np.array_equal(d.tokens, c.tokens)
    assert datasets.encode_ref(ref, tok, "melody", cache) and cache.hits == 2


def test_cache_key_includes_annotations(fake_root, tmp_path):
    ref = corpora.asap_refs(fake_root, ["Bach"], "performance")[0]
    tok = Tokenizer()
    k1 = datasets.TokenCache(tmp_path).path_for(ref, tok)
    ref.annotations.write_text(ref.annotations.read_text().replace("0.3\t", "0.31\t"))
    assert datasets.TokenCache(tmp_path).path_for(ref, tok) != k1


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SMU_CACHE_DIR", str(tmp_path / "c"))
    assert datasets.TokenCache().root == tmp_path / "c"


# ----------------------------------------------------------------------------- windows
def test_windows_match_the_tokenizer(fake_root):
    tok = Tokenizer(TokenizerConfig(max_len=4, stride=3))
    ref = corpora.pop909_refs(fake_root)[0]
    piece = corpora.read_ref(ref, tok)
    enc = datasets.encode_ref(ref, tok, "melody")
    expect = tok.encode_windows(piece)
    assert enc.n_windows == len(expect)
    for (w, ids), (w2, ids2) in zip(enc.windows, expect, strict=False):
        assert np.array_equal(w, w2) and np.array_equal(ids, ids2)
        assert w[0, tok.index["bar"]] == N_SPECIAL


# ----------------------------------------------------------------------------- skip + report
def test_bad_files_are_skipped_with_reasons(fake_root, tok, tmp_path):
    (fake_root / "pop1k7" / "midi_analyzed" / "src_001" / "9.mid").write_bytes(b"not midi at all")
    (fake_root / "pop1k7" / "midi_analyzed" / "src_001" / "8.mid").write_bytes(b"")
    task = corpora.pretrain_task(fake_root, seed=0)
    built = datasets.build_datasets(task, tok, datasets.TokenCache(tmp_path / "c"))
    reasons = dict(built.skipped)
    assert set(reasons) == {str(fake_root / "pop1k7/midi_analyzed/src_001" / n) for n in ("8.mid", "9.mid")}
    assert "MThd" in reasons[str(fake_root / "pop1k7/midi_analyzed/src_001/9.mid")]
    assert "empty" in reasons[str(fake_root / "pop1k7/midi_analyzed/src_001/8.mid")]
    assert sum(len(ds.pieces) for ds in built.datasets.values()) == len(task.all_refs()) - 2


# ----------------------------------------------------------------------------- folder + CSV
@pytest.fixture
def user_folder(tmp_path, make_midi):
    d = tmp_path / "mine"
    for k in range(6):
        make_midi(d, [(i * 240, 240, 60 + i + k, 80) for i in range(5)], name=f"p{k}.mid")
    make_midi(d / "sub", [(0, 480, 60, 80)], name="deep.mid")
    rows = [[f"p{k}.mid", "happy" if k % 2 else "sad"] for k in range(6)] + [["sub/deep.mid", "sad"]]
    _write_csv(tmp_path / "labels.csv", ["file", "label"], rows)
    return d, tmp_path / "labels.csv"


def test_folder_task_labels_and_splits(user_folder):
    folder, labels = user_folder
    task = corpora.folder_task(folder, labels, seed=0)
    assert task.classes == ["happy", "sad"] and task.level == "sequence"
    refs = task.all_refs()
    assert len(refs) == 7
    assert {r.name: task.classes[r.label] for r in refs}["p1.mid"] == "happy"
    assert corpora.folder_task(folder, labels, classes=["sad", "happy", "angry"]).classes[0] == "sad"
    # absolute paths inside the folder are accepted, outside it refused
    text = labels.read_text().replace("p0.mid,", f"{folder / 'p0.mid'},")
    labels.write_text(text)
    assert "p0.mid" in {r.name for r in corpora.folder_task(folder, labels).all_refs()}
    labels.write_text(text.replace(str(folder / "p0.mid"), str(folder.parent / "p0.mid")))
    with pytest.raises(SMUInputError, match="not inside"):
        corpora.folder_task(folder, labels)


def test_folder_task_group_column(tmp_path, make_midi):
    d = tmp_path / "m"
    for k in range(10):
        make_midi(d, [(0, 480, 60 + k, 80)], name=f"{k}.mid")
    _write_csv(tmp_path / "l.csv", ["file", "label", "group"], [[f"{k}.mid", "x", f"g{k // 2}"] for k in range(10)])
    task = corpora.folder_task(d, tmp_path / "l.csv")
    g = _groups_by_split(task)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and len(set().union(*g.values())) == 5


@pytest.mark.parametrize("mutate,match", [
    (lambda rows: rows + [["ghost.mid", "sad"]], "not found"),
    (lambda rows: rows[1:], "no label row"),
    (lambda rows: rows + [rows[0]], "listed twice"),
    (lambda rows: [[rows[0][0], ""]] + rows[1:], "empty label"),
])
def test_folder_task_errors(user_folder, mutate, match):
    folder, labels = user_folder
    with open(labels) as fh:
        rows = list(csv.reader(fh))[1:]
    _write_csv(labels, ["file", "label"], mutate(rows))
    with pytest.raises(SMUInputError, match=match):
        corpora.folder_task(folder, labels)


def test_folder_task_unknown_label_and_bad_csv(user_folder, tmp_path):
    folder, labels = user_folder
    with pytest.raises(SMUInputError, match="unknown label 'happy'"):
        corpora.folder_task(folder, labels, classes=["sad"])
    _write_csv(tmp_path / "bad.csv", ["name", "class"], [["p0.mid", "x"]])
    with pytest.raises(SMUInputError, match="needs columns file,label"):
        corpora.folder_task(folder, tmp_path / "bad.csv")
    with pytest.raises(SMUInputError, match="labels CSV not found"):
        corpora.folder_task(folder, tmp_path / "nope.csv")


def test_folder_task_paths_cannot_leave_the_folder(user_folder, tmp_path, make_midi):
    """A row's path is resolved (``..``, symlinks) before the inside-the-folder rule applies."""
    folder, labels = user_folder
    make_midi(tmp_path / "elsewhere", [(0, 480, 60, 80)], name="out.mid")
    base = labels.read_text()
    labels.write_text(base + "../elsewhere/out.mid,sad\n")
    with pytest.raises(SMUInputError, match="not inside"):
        corpora.folder_task(folder, labels)
    (folder / "link.mid").symlink_to(tmp_path / "elsewhere" / "out.mid")
    labels.write_text(base + "link.mid,sad\n")
    with pytest.raises(SMUInputError, match="not inside"):
        corpora.folder_task(folder, labels)
    (folder / "link.mid").unlink()
    # a roundabout path that stays inside is the same file, so listing it again is a repeat
    labels.write_text(base.replace("p0.mid,", "sub/../p0.mid,"))
    assert "p0.mid" in {r.name for r in corpora.folder_task(folder, labels).all_refs()}
    labels.write_text(base + "./p1.mid,sad\n")
    with pytest.raises(SMUInputError, match="listed twice"):
        corpora.folder_task(folder, labels)


@pytest.mark.parametrize("content,match", [
    (b"file,label\np0.mid,sad\xff\xfe\n", "not a UTF-8 text file"),
    (b"file,label\np0.mid," + b"x" * 200_000 + b"\n", "not a readable CSV"),
])
def test_folder_task_unreadable_csv_is_an_input_error(user_folder, tmp_path, content, match):
    folder, _ = user_folder
    bad = tmp_path / "odd.csv"
    bad.write_bytes(content)
    with pytest.raises(SMUInputError, match=match) as e:
        corpora.folder_task(folder, bad)
    assert "odd.csv" in str(e.value)


# ----------------------------------------------------------------------------- save / load / CLI
def test_save_and_load_roundtrip(fake_root, tmp_path):
    tok = Tokenizer(TokenizerConfig(max_len=4, stride=2))
    built = datasets.build_datasets(corpora.melody_task(fake_root), tok, None)
    out = datasets.save_tokenized(built, tok, tmp_path / "out")
    man = json.loads((out / "manifest.json").read_text())
    assert man["task"] == "melody" and man["classes"] == corpora.MELODY_CLASSES
    assert TokenizerConfig.from_json((out / "tokenizer.json").read_text()) == tok.config
    for s in corpora.SPLITS:
        ds = datasets.load_tokenized(out, s)
        orig = built.datasets[s]
        assert len(ds) == len(orig) and ds.piece_names == orig.piece_names
        for i in range(len(ds)):
            a, b = ds[i], orig[i]
            assert all(torch_equal(a[k], b[k]) for k in a)
    with pytest.raises(SMUInputError):
        datasets.load_tokenized(tmp_path, "train")


def _edit_split(out, split="train", **change):
    """Rewrite ``out/<split>.npz`` with arrays replaced (None: removed)."""
    path = out / f"{split}.npz"
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    for k, v in change.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v(a) if callable(v) else v
    np.savez(path, **a)


@pytest.mark.parametrize("change,why", [
    ({"tokens": None}, "no tokens array"),
    ({"tokens": lambda a: a["tokens"].ravel()}, r"must be \(notes, attributes\)"),
    ({"tokens": lambda a: a["tokens"].astype(np.float32)}, "not whole numbers"),
    ({"piece_offsets": lambda a: a["piece_offsets"][::-1].copy()}, "piece_offsets"),
    ({"names": lambda a: a["names"][:-1]}, "one entry per piece"),
    ({"note_labels": lambda a: a["note_labels"] + 99}, "note_labels"),
    ({"win_spans": lambda a: np.where(np.arange(a["win_spans"].size).reshape(-1, 2) == 1, 10 ** 7, a["win_spans"])},
     "outside its piece"),
    ({"win_piece": lambda a: a["win_piece"] + 1}, "win_piece"),
])
def test_a_damaged_tokenized_split_is_an_input_error(fake_root, tmp_path, change, why):
    """An edited, partly copied or foreign split is refused on loading, naming the file and what
    does not fit, not as an IndexError or RuntimeError in the middle of training."""
    tok = Tokenizer(TokenizerConfig(max_len=4, stride=2))
    built = datasets.build_datasets(corpora.melody_task(fake_root), tok, None)
    out = datasets.save_tokenized(built, tok, tmp_path / "out")
    _edit_split(out, **change)
    with pytest.raises(SMUInputError, match=why) as e:
        datasets.load_tokenized(out, "train")
    assert "train.npz" in str(e.value)
    datasets.load_tokenized(out, "val")  # the untouched split still loads


def test_a_manifest_with_a_bad_level_or_classes_is_refused(fake_root, tmp_path):
    tok = Tokenizer(TokenizerConfig(max_len=4, stride=2))
    out = datasets.save_tokenized(datasets.build_datasets(corpora.melody_task(fake_root), tok, None), tok,
                                  tmp_path / "out")
    man = json.loads((out / "manifest.json").read_text())
    for key, value, why in (("level", "evil", "level must be"), ("classes", "abc", "list of names")):
        (out / "manifest.json").write_text(json.dumps({**man, key: value}))
        with pytest.raises(SMUInputError, match=why):
            datasets.load_tokenized(out, "train")


def torch_equal(a, b):
    import torch

    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b


def _cli(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.add_tokenize_parser(sub)
    args = parser.parse_args(["tokenize", *argv])
    return args.func(args)


def test_cli_tokenize_folder(user_folder, tmp_path, capsys):
    folder, labels = user_folder
    (folder / "broken.mid").write_bytes(b"MThd\x00")
    with open(labels, "a") as fh:
        fh.write("broken.mid,sad\n")
    out = tmp_path / "tok"
    assert _cli([str(folder), "--task", "folder", "--labels", str(labels), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert "total: 7 pieces" in text and "skipped 1 file(s):" in text
    assert f"{folder / 'broken.mid'}: truncated MIDI header" in text
    man = json.loads((out / "manifest.json").read_text())
    assert man["skipped"][0]["path"].endswith("broken.mid")
    assert sum(v["pieces"] for v in man["splits"].values()) == 7
    with pytest.raises(SMUInputError, match="--labels"):
        _cli([str(folder), "--task", "folder", "--out", str(out)])


def test_cli_tokenize_velocity_on_data_root(fake_root, tmp_path, capsys):
    out = tmp_path / "vel"
    assert _cli([str(fake_root), "--task", "velocity", "--out", str(out), "--no-cache", "--max-len", "8"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert "velocity" not in man["attributes"] and man["classes"] == corpora.VELOCITY_CLASSES
    assert man["splits"]["train"]["pieces"] == 16
    assert sum(man["splits"]["train"]["label_counts"].values()) == man["splits"]["train"]["notes"]
    assert "skipped 0 file(s)" in capsys.readouterr().out
