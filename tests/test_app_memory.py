"""The app's memory under many uploads, and where an upload goes (issue 24, items 3 and 4).

Item 3: every ``st.cache_data`` / ``st.cache_resource`` function of the app states a cap
(``max_entries``), and 50 different uploaded pieces through the Explore page leave each cache
within its cap (entry counts read from Streamlit's cache objects: they do not flake on a loaded
machine, unlike RSS).

Item 4: an upload stays in the session that made it (a second session sees neither it in its
session state nor its name on the page), and reading it writes nothing outside a temporary
folder that is removed once read (the files of the temporary folder and the repository are
scanned for the upload's bytes).
"""

from __future__ import annotations

import ast
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from app_helpers import ROOT, make_model, page, texts
from conftest import midi_bytes
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A

PAGE = page("explore.py")
# cached functions without max_entries: one entry per server by construction (their arguments
# come from the environment, not from what a session does)
UNCAPPED_BY_DESIGN = {"_registry", "_warm_up_status"}
APP_FILES = [*(ROOT / "smu_explain" / f"{m}.py" for m in ("appstate", "appwarmup", "appwidgets")),
             *sorted((ROOT / "app_pages").glob("*.py")), ROOT / "app.py"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models") / "tiny-mem", seed=3)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


def _cached_functions() -> list[tuple[str, str, str, object]]:
    """(file, function, cache kind, max_entries or None) of every cached function of the app."""
    out = []
    for f in APP_FILES:
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                call = dec if isinstance(dec, ast.Call) else None
                target = call.func if call else dec
                if isinstance(target, ast.Attribute) and target.attr in ("cache_data", "cache_resource"):
                    cap = next((ast.literal_eval(k.value) for k in (call.keywords if call else [])
                                if k.arg == "max_entries"), None)
                    out.append((f.name, node.name, target.attr, cap))
    return out


def cache_entries() -> dict[str, tuple[int, float | None]]:
    """Streamlit's caches of this process: function name -> (entries, max_entries), summed over
    the caches of one name (one per function and session scope)."""
    from streamlit.runtime.caching import cache_data_api as D
    from streamlit.runtime.caching import cache_resource_api as R

    out: dict[str, tuple[int, float | None]] = {}
    for registry in (D._data_caches, R._resource_caches):
        with registry._caches_lock:
            caches = [c for per_scope in registry._function_caches.values() for c in per_scope.values()]
        for c in caches:
            store = getattr(c, "storage", c)
            mem = getattr(store, "_mem_cache", None)
            if mem is None:  # a storage that wraps another
                mem = getattr(getattr(store, "_persist_storage", None), "_mem_cache", None)
            assert mem is not None, f"cannot count the entries of {c.display_name}"
            name = c.display_name.rsplit(".", 1)[-1]
            n, _ = out.get(name, (0, None))
            out[name] = (n + len(mem), c.max_entries)
    return out


def piece_bytes(i: int, marker: str = "") -> bytes:
    """A small piece, different for every ``i`` (pitches, rhythm and length), as MIDI bytes;
    ``marker`` becomes its track name (so the bytes hold it verbatim)."""
    n = 12 + i % 9
    notes = [(k * (120 + 30 * (i % 5)), 200, 48 + (k * (i + 3) + i) % 36, 50 + (k * 7 + i) % 70) for k in range(n)]
    return midi_bytes(tracks=[{"notes": notes, "name": marker or f"piece {i}"}])


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    """What ``piece_picker`` keeps after an upload (as tests/test_app_explore.py sets it)."""
    at.session_state[A.K_PIECE] = (name, data)
    at.session_state[A.K_UPLOAD] = (name, data)
    return at.run()


def test_every_cache_states_a_cap():
    found = _cached_functions()
    assert {f for _, f, _, _ in found} >= {"_read_piece_cached", "_load_model", "scores_cached", "explain_cached",
                                           "_figure_cached"}
    uncapped = [f"{file}:{fn}" for file, fn, _, cap in found if cap is None and fn not in UNCAPPED_BY_DESIGN]
    assert not uncapped, f"cached functions without max_entries: {uncapped}"


def test_fifty_uploads_stay_within_the_caches_caps(model_dir):
    caps = {fn: cap for _, fn, _, cap in _cached_functions() if cap is not None}
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[A.K_MODEL_A] = str(model_dir)
    seen_notes = set()
    for i in range(50):
        upload(at, f"upload_{i:02d}.mid", piece_bytes(i))
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        assert at.radio(key="explore_source").value == "upload"
        seen_notes.add(next(m.value for m in at.metric if m.label == "Notes"))
        entries = cache_entries()
        over = {k: (n, caps.get(k)) for k, (n, _) in entries.items() if k in caps and n > caps[k]}
        assert not over, f"after {i + 1} uploads, caches above their caps: {over}"
    assert len(seen_notes) > 1  # the pieces did differ
    entries = cache_entries()
    # the Explore page ran the model on every upload: its overlay cache filled and then evicted
    assert entries["scores_cached"][0] == caps["scores_cached"] < 50
    assert entries["_read_piece_cached"][0] <= caps["_read_piece_cached"]
    # Streamlit's own record of the cap is the one the source states
    for name, (_n, cap) in entries.items():
        if name in caps:
            assert cap == caps[name], (name, cap, caps[name])


def _files_holding(roots: list[Path], needle: bytes, since: float, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under ``roots`` changed since ``since`` whose bytes contain ``needle`` (files and folders
    that other processes remove meanwhile are passed over)."""
    import os

    hits = []
    for root in roots:
        for folder, dirs, files in os.walk(root, onerror=lambda e: None):
            dirs[:] = [d for d in dirs if d not in skip]
            for f in files:
                p = os.path.join(folder, f)
                try:
                    st = os.stat(p, follow_symlinks=False)
                    if (st.st_mtime >= since - 1 and st.st_size <= 64 * 1024 * 1024 and os.path.isfile(p)
                            and not os.path.islink(p)):
                        with open(p, "rb") as fh:
                            if needle in fh.read():
                                hits.append(p)
                except OSError:
                    continue
    return hits


def test_an_upload_stays_in_its_session_and_leaves_no_file(tmp_path, monkeypatch):
    marker = f"smu-secret-{uuid.uuid4().hex}"
    data = piece_bytes(7, marker=marker)
    name = f"{marker}.mid"
    # the per-read folders (sandbox.read_piece_bounded: tempfile.mkdtemp) go to a temp dir of this test
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(Path(mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    start = time.time()

    a = AppTest.from_file(PAGE, default_timeout=120)
    upload(a, name, data)
    assert not a.exception and not a.error
    assert a.radio(key="explore_source").value == "upload"
    assert a.session_state[A.K_PIECE] == (name, data)  # A works on its upload
    notes_a = next(m.value for m in a.metric if m.label == "Notes")
    assert int(notes_a) == 12 + 7 % 9

    # a second session (another browser) sees nothing of it
    b = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not b.exception
    for key in (A.K_PIECE, A.K_UPLOAD):
        held = b.session_state.get(key)
        assert held is None or (held[0] != name and held[1] != data), key
    assert b.radio(key="explore_source").value == "sample"
    assert name not in b.selectbox(key="explore_sample").options
    assert marker not in texts(b)
    b.radio(key="explore_source").set_value("upload").run()  # B's own upload slot is empty
    assert not b.exception
    assert marker not in texts(b)
    assert b.session_state.get(A.K_UPLOAD) is None
    # A still has it (B's runs did not touch A's state)
    assert a.session_state[A.K_UPLOAD] == (name, data)

    # nothing with the upload's bytes on disk: the per-read folders are gone, and no file under the
    # system's temp dir or the repository holds the upload
    reads = [d for d in made if d.name.startswith("smu_read_")]
    assert reads and all(d.parent == private_tmp for d in reads), made  # the upload was read in a temp folder
    assert not any(d.exists() for d in made), [str(d) for d in made if d.exists()]  # ... which is gone
    assert list(private_tmp.iterdir()) == [], [str(p) for p in private_tmp.rglob("*")]
    system_tmp = Path("/tmp")
    leaks = _files_holding([system_tmp, ROOT], marker.encode(), start,
                           skip=(".venv", ".git", "node_modules", "__pycache__"))
    assert not leaks, leaks
    probe = tmp_path / "probe.bin"  # the scan does find such a file
    probe.write_bytes(b"x" + marker.encode() + b"y")
    assert _files_holding([system_tmp], marker.encode(), start, skip=(".venv",)) == [str(probe)]


def test_a_piece_above_the_note_cap_is_refused_and_not_cached(monkeypatch):
    """A piece above MAX_NOTES is refused (the page's message) and never kept in the read cache:
    one such piece can take tens of MB (issue 24.3)."""
    import symusic

    from smu_explain import appstate as A

    monkeypatch.setattr(A, "MAX_NOTES", 50)
    s = symusic.Score(480)
    t = symusic.Track(name="p", program=0)
    for i in range(80):
        t.notes.append(symusic.Note(i * 240, 240, 60 + i % 12, 80))
    s.tracks.append(t)
    data = s.dumps_midi()
    A._read_piece_cached.clear()
    with pytest.raises(A.TooManyNotes) as e:
        A.read_piece_cached(data, "long.mid")
    assert e.value.n == 80
    calls = []
    real = A._read
    monkeypatch.setattr(A, "_read", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(A.TooManyNotes):
        A.read_piece_cached(data, "long.mid")
    assert calls == [1]  # read again: the refused piece was not cached
