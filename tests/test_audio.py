"""Audio rendering: built-in synth always works; fluidsynth is used (and named) when installed."""

import io
import wave

import numpy as np
import pandas as pd
import pytest

from smu_explain import audio


def notes(n=4):
    s = np.arange(n) * 0.5
    return pd.DataFrame({"pitch": [60, 64, 67, 72][:n] * (n // 4 or 1), "velocity": 100,
                         "start_sec": s, "end_sec": s + 0.4, "program": 0, "track": 0})


def read_wav(data):
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float) / 32768
    return x, rate


def test_builtin_synth_plays_the_right_pitch():
    df = pd.DataFrame({"pitch": [69], "velocity": [100], "start_sec": [0.0], "end_sec": [1.0]})
    a = audio.synthesize(df, engine="builtin")
    assert a.engine == "built-in sine synth"
    x, rate = read_wav(a.wav)
    assert rate == 22050
    assert a.seconds == pytest.approx(len(x) / rate)
    assert 1.1 < a.seconds < 1.3  # 1 s + release
    seg = x[int(0.2 * rate):int(0.8 * rate)]
    spec = np.abs(np.fft.rfft(seg))
    freq = np.fft.rfftfreq(len(seg), 1 / rate)[np.argmax(spec)]
    assert freq == pytest.approx(440.0, abs=3.0)
    assert np.abs(x).max() == pytest.approx(0.9, abs=0.01)
    # silence before a late note, sound while it plays
    late = df.assign(start_sec=1.0, end_sec=1.5)
    y, _ = read_wav(audio.synthesize(late, engine="builtin").wav)
    assert np.abs(y[: int(0.9 * rate)]).max() == 0.0
    assert np.abs(y[int(1.1 * rate): int(1.4 * rate)]).max() > 0.3


def test_louder_velocity_is_louder_and_empty_is_silent():
    df = pd.DataFrame({"pitch": [60, 60], "velocity": [30, 120], "start_sec": [0.0, 1.0],
                       "end_sec": [0.5, 1.5]})
    x, rate = read_wav(audio.synthesize(df, engine="builtin").wav)
    soft = np.abs(x[int(0.1 * rate):int(0.4 * rate)]).max()
    loud = np.abs(x[int(1.1 * rate):int(1.4 * rate)]).max()
    assert loud > 3 * soft
    e, _ = read_wav(audio.synthesize(df.iloc[:0], engine="builtin").wav)
    assert np.all(e == 0)


def test_max_seconds_cuts():
    df = pd.DataFrame({"pitch": [60, 62], "velocity": 90, "start_sec": [0.0, 5.0], "end_sec": [4.0, 6.0]})
    a = audio.synthesize(df, engine="builtin", max_seconds=2.0)
    assert a.seconds < 2.5


def test_notes_to_midi_groups_tracks():
    df = notes().assign(track=[0, 0, 1, 1], program=[0, 0, 40, 40])
    pm = audio.notes_to_midi(df)
    assert [i.program for i in pm.instruments] == [0, 40]
    assert [n.pitch for n in pm.instruments[1].notes] == [67, 72]


def test_bad_engine_and_missing_columns():
    with pytest.raises(ValueError):
        audio.synthesize(notes(), engine="piano")
    with pytest.raises(ValueError, match="start_sec"):
        audio.synthesize(notes().drop(columns="start_sec"))


def test_forced_fluidsynth_without_it_raises(monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="not installed"):
        audio.synthesize(notes(), engine="fluidsynth")
    # auto falls back to the built-in synth and says so
    assert audio.synthesize(notes()).engine == "built-in sine synth"


@pytest.mark.skipif(not audio.fluidsynth_available(), reason="fluidsynth or a GM soundfont is not installed")
def test_fluidsynth_renders_and_names_itself():
    a = audio.synthesize(notes(), engine="auto")
    assert a.engine.startswith("fluidsynth (")
    x, rate = read_wav(a.wav)
    assert 1.5 < a.seconds < 6 and np.abs(x).max() > 0.01
