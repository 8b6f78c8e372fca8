"""Shared fixtures: tiny MIDI files made on the fly, and the real-data root.

Fixtures
--------
``make_midi``        the function :func:`make_midi` (call ``make_midi(tmp_path, notes=...)``).
``midi_bytes``       the function :func:`midi_bytes` (same arguments, returns bytes).
``tiny_midi``        path of a small 2-track piano piece (+ one drum track), 4/4, 120 qpm.
``tiny_midi_dir``    folder with 4 small pieces (a.mid .. d.mid) of different content.
``rich_midi_bytes``  bytes of a busier file (3 tracks, drums, tempo and metre changes):
                     the seed for fuzzing.
``data_root``        Path of the real datasets (SMU_DATA_ROOT or ../shared/data); skips
                     the test with a clear reason when absent.

Helpers: :func:`wait_until` (poll a condition with a generous timeout; tests wait on events,
never on fixed wall-clock budgets, so a loaded machine only makes them slower).

Hypothesis profiles
-------------------
``ci``   ``derandomize=True`` (the examples are a function of the test: every CI run
         tries the same ones), no example database, failing examples printed as
         ``@reproduce_failure`` blobs, no deadline.
``dev``  hypothesis' defaults (random exploration, local example database), no deadline.
The profile is ``SMU_HYPOTHESIS_PROFILE`` when set, else ``ci`` when ``CI`` is true
(``true``/``1``/``yes``, as CI services set it), else ``dev``; ``pytest
--hypothesis-profile=NAME`` overrides both. Tests set only ``max_examples`` and
health checks in their own ``@settings``, so the profile's ``derandomize`` holds.

Notes are given in ticks, as tuples ``(onset_tick, duration_tick, pitch[, velocity])``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def hypothesis_profile_name(environ=os.environ) -> str:
    """The hypothesis profile for this run (see the module docstring)."""
    name = environ.get("SMU_HYPOTHESIS_PROFILE", "").strip()
    if name:
        return name
    return "ci" if environ.get("CI", "").strip().lower() in ("true", "1", "yes") else "dev"


WAIT_TIMEOUT_S = 120.0


def last_err(capsys) -> str:
    """The one ``error:`` line a CLI command printed last on stderr (no traceback before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def wait_until(condition, what: str = "the condition", timeout: float = WAIT_TIMEOUT_S, interval: float = 0.05):
    """Poll ``condition()`` until it returns something truthy and return that; fail the test
    (AssertionError naming ``what``) after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _register_hypothesis_profiles() -> None:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
    settings.register_profile("dev", deadline=None)
    settings.load_profile(hypothesis_profile_name())


# at import, before the test modules build their @settings (they inherit from the loaded profile)
_register_hypothesis_profiles()


def _note_list(notes: Iterable[Sequence[int]]):
    from symusic import Note

    out = []
    for n in notes:
        t, d, p = int(n[0]), int(n[1]), int(n[2])
        v = int(n[3]) if len(n) > 3 else 90
        out.append(Note(t, d, p, v))
    return out


def build_score(
    notes: Iterable[Sequence[int]] | None = None,
    *,
    tracks: Sequence[dict] | None = None,
    drums: Iterable[Sequence[int]] | None = None,
    time_signatures: Iterable[tuple[int, int, int]] = (),
    tempo_changes: Iterable[tuple[int, float]] = (),
    tpq: int = 480,
    program: int = 0,
):
    """A symusic Score (ticks).

    notes: one pitched track (``program``). tracks: extra tracks as dicts with keys
    ``notes``, optional ``program`` (0), ``name``, ``is_drum`` (False). drums: notes of
    a drum track (channel 10). time_signatures: ``(tick, numerator, denominator)``.
    tempo_changes: ``(tick, quarters per minute)``.
    """
    from symusic import Score, Tempo, TimeSignature, Track

    score = Score(tpq)
    all_tracks = []
    if notes is not None:
        all_tracks.append({"notes": notes, "program": program, "name": "piano"})
    all_tracks.extend(tracks or [])
    if drums is not None:
        all_tracks.append({"notes": drums, "name": "drums", "is_drum": True})
    for spec in all_tracks:
        tr = Track(name=spec.get("name", "track"), program=int(spec.get("program", 0)),
                   is_drum=bool(spec.get("is_drum", False)))
        for n in _note_list(spec["notes"]):
            tr.notes.append(n)
        score.tracks.append(tr)
    for t, num, den in time_signatures:
        score.time_signatures.append(TimeSignature(int(t), int(num), int(den)))
    for t, qpm in tempo_changes:
        score.tempos.append(Tempo(int(t), qpm=float(qpm)))
    return score


def midi_bytes(notes=None, **kwargs) -> bytes:
    """Standard MIDI file bytes of :func:`build_score`."""
    return bytes(build_score(notes, **kwargs).dumps_midi())


def make_midi(tmp_path, notes=None, *, name: str = "test.mid", **kwargs) -> Path:
    """Write a MIDI file under ``tmp_path`` (see :func:`build_score`) and return its path."""
    path = Path(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(midi_bytes(notes, **kwargs))
    return path


def scale_notes(n: int, start: int = 0, step: int = 240, dur: int = 240, low: int = 48) -> list:
    """``n`` notes climbing a C major-ish pattern, one every ``step`` ticks."""
    return [(start + i * step, dur, low + (i * 2) % 36, 60 + (i * 7) % 60) for i in range(n)]


# the fixture named like the function, so tests call make_midi(tmp_path, ...)
@pytest.fixture(name="make_midi", scope="session")
def _make_midi_fixture():
    return make_midi


@pytest.fixture(name="midi_bytes", scope="session")
def _midi_bytes_fixture():
    return midi_bytes


@pytest.fixture
def tiny_midi(tmp_path) -> Path:
    melody = [(i * 480, 480, 72 + (i % 5), 100) for i in range(16)]
    bass = [(i * 1920, 1920, 36 + (i % 3), 70) for i in range(4)]
    return make_midi(
        tmp_path, name="tiny.mid",
        tracks=[{"notes": melody, "name": "MELODY", "program": 0},
                {"notes": bass, "name": "PIANO", "program": 0}],
        drums=[(i * 480, 60, 36) for i in range(8)],
        time_signatures=[(0, 4, 4)], tempo_changes=[(0, 120)],
    )


@pytest.fixture
def tiny_midi_dir(tmp_path) -> Path:
    d = tmp_path / "midis"
    make_midi(d, scale_notes(20), name="a.mid")
    make_midi(d, scale_notes(30, step=120, low=60), name="b.mid", time_signatures=[(0, 3, 4)])
    make_midi(d, scale_notes(12, step=480, dur=960, low=40), name="c.mid", tempo_changes=[(0, 90)])
    make_midi(d, [(i * 240, 240, 60 + i % 12) for i in range(40)], name="d.mid",
              time_signatures=[(0, 6, 8)], tempo_changes=[(0, 100), (1920, 140)])
    return d


@pytest.fixture(scope="session")
def rich_midi_bytes() -> bytes:
    rng = np.random.default_rng(0)
    mel = [(int(t), int(d), int(p), int(v)) for t, d, p, v in zip(
        np.cumsum(rng.integers(1, 5, 120)) * 120, rng.integers(30, 960, 120),
        rng.integers(55, 90, 120), rng.integers(30, 127, 120), strict=False)]
    acc = [(i * 240, 480, 40 + (i * 5) % 24, 60) for i in range(150)]
    return midi_bytes(
        tracks=[{"notes": mel, "name": "MELODY", "program": 0},
                {"notes": acc, "name": "PIANO", "program": 1}],
        drums=[(i * 480, 60, 38, 90) for i in range(30)],
        time_signatures=[(0, 4, 4), (7680, 3, 4), (13440, 6, 8)],
        tempo_changes=[(0, 96), (4800, 120), (9600, 80)],
    )


def _data_root() -> Path:
    env = os.environ.get("SMU_DATA_ROOT")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set SMU_DATA_ROOT)")
    return root


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (small models: faster, and deterministic sums)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole tiny-preset study (seconds), run once per session in a temporary folder:
    ``{"paths", "study", "executed", "wall"}``. Tests that change its files re-run what they delete."""
    import time

    from smu_explain import study as S

    base = tmp_path_factory.mktemp("study")
    paths = S.StudyPaths.make(base / "runs", base / "results", base / "RESULTS.md")
    st = S.Study("tiny", paths, quiet=True)
    t0 = time.perf_counter()
    executed = st.run()
    return {"paths": paths, "study": st, "executed": executed, "wall": time.perf_counter() - t0}
