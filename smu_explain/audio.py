"""Turn a notes table into audio (WAV bytes) so the app can play original vs reconstruction.

Rules:

- Input is a notes table with ``pitch``, ``velocity``, ``start_sec``,
  ``end_sec`` (and optionally ``program``, ``track``), as made by
  ``Piece.notes_table()`` / the explain table / ``pianoroll.reconstruction_frame``.
- Engine ``"auto"`` uses the ``fluidsynth`` command-line program with a
  General MIDI soundfont when both are installed (soundfont: ``$SMU_SOUNDFONT``,
  else the first of :data:`SOUNDFONT_CANDIDATES` that exists); otherwise, or
  when fluidsynth fails, the built-in synth: additive sines (fundamental +
  2 harmonics) with a linear ADSR envelope, amplitude from velocity, mixed and
  peak-normalised to 0.9. ``"fluidsynth"`` / ``"builtin"`` force an engine
  (forcing fluidsynth where it is missing raises ``RuntimeError``).
- The result says which engine played (:class:`Audio.engine`), so the UI can
  tell the user. Output is mono 16-bit PCM WAV.
- ``max_seconds`` cuts the audio (notes starting later are dropped, notes
  running past the end are cut) so a long piece renders quickly.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Audio", "SOUNDFONT_CANDIDATES", "find_soundfont", "fluidsynth_available",
           "notes_to_midi", "synthesize", "builtin_synth", "wav_bytes"]

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)


@dataclass(frozen=True)
class Audio:
    """Rendered audio: WAV bytes, the engine that made them, the sample rate, the length."""

    wav: bytes
    engine: str  # "fluidsynth (<soundfont file name>)" or "built-in sine synth"
    sample_rate: int
    seconds: float


def find_soundfont() -> Path | None:
    """``$SMU_SOUNDFONT`` if it names a file, else the first existing candidate, else None."""
    env = os.environ.get("SMU_SOUNDFONT")
    if env and Path(env).is_file():
        return Path(env)
    for c in SOUNDFONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    return None


def fluidsynth_available() -> bool:
    """True when the ``fluidsynth`` program and a GM soundfont are both installed."""
    return shutil.which("fluidsynth") is not None and find_soundfont() is not None


def _clip(df: pd.DataFrame, max_seconds: float | None) -> pd.DataFrame:
    if max_seconds is None or not len(df):
        return df
    df = df[df["start_sec"] < max_seconds].copy()
    df["end_sec"] = np.minimum(df["end_sec"].to_numpy(dtype=float), max_seconds)
    return df


def notes_to_midi(df: pd.DataFrame):
    """A ``pretty_midi.PrettyMIDI`` with one instrument per (track, program) of the table."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    if not len(df):
        return pm
    track = df["track"].to_numpy() if "track" in df.columns else np.zeros(len(df), dtype=int)
    program = df["program"].to_numpy() if "program" in df.columns else np.zeros(len(df), dtype=int)
    vel = (df["velocity"].to_numpy() if "velocity" in df.columns
           else np.full(len(df), 80))
    insts: dict[tuple[int, int], pretty_midi.Instrument] = {}
    for p, v, s, e, t, prog in zip(df["pitch"].to_numpy(), vel, df["start_sec"].to_numpy(dtype=float),
                                   df["end_sec"].to_numpy(dtype=float), track, program, strict=False):
        key = (int(t), int(prog))
        if key not in insts:
            insts[key] = pretty_midi.Instrument(program=int(prog) % 128, name=f"track {int(t)}")
        e = max(float(e), float(s) + 0.02)
        insts[key].notes.append(pretty_midi.Note(velocity=int(np.clip(v, 1, 127)),
                                                 pitch=int(np.clip(p, 0, 127)), start=float(s), end=e))
    pm.instruments.extend(insts[k] for k in sorted(insts))
    return pm


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] -> 16-bit PCM WAV bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def builtin_synth(df: pd.DataFrame, sample_rate: int = 22050, *, attack: float = 0.01,
                  decay: float = 0.1, sustain: float = 0.6, release: float = 0.15) -> np.ndarray:
    """Float32 mono samples of the notes: additive sines with a linear ADSR envelope.

    Partials 1, 2, 3 with amplitudes 1, 0.4, 0.15; note amplitude
    ``(velocity / 127) ** 1.5``; the release runs after ``end_sec``. The mix is
    scaled to a peak of 0.9 (silence stays silence).
    """
    if not len(df):
        return np.zeros(int(sample_rate * 0.5), dtype=np.float32)
    starts = df["start_sec"].to_numpy(dtype=float)
    ends = np.maximum(df["end_sec"].to_numpy(dtype=float), starts + 0.03)
    total = int(np.ceil((ends.max() + release + 0.05) * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    vel = df["velocity"].to_numpy(dtype=float) if "velocity" in df.columns else np.full(len(df), 80.0)
    pitch = df["pitch"].to_numpy(dtype=float)
    partials = ((1.0, 1.0), (2.0, 0.4), (3.0, 0.15))
    norm = sum(a for _, a in partials)
    for s, e, p, v in zip(starts, ends, pitch, vel, strict=False):
        i0 = int(s * sample_rate)
        held = e - s
        n = int((held + release) * sample_rate)
        if n <= 0 or i0 >= total:
            continue
        n = min(n, total - i0)
        t = np.arange(n, dtype=np.float32) / sample_rate
        f = 440.0 * 2.0 ** ((p - 69.0) / 12.0)
        wave_ = np.zeros(n, dtype=np.float32)
        for k, a in partials:
            if k * f < sample_rate / 2:
                wave_ += a * np.sin(2 * np.pi * k * f * t, dtype=np.float32)
        env = np.interp(t, [0.0, attack, attack + decay, max(held, attack + decay + 1e-3),
                            max(held, attack + decay + 1e-3) + release],
                        [0.0, 1.0, sustain, sustain, 0.0]).astype(np.float32)
        out[i0:i0 + n] += wave_ * env * ((np.clip(v, 1, 127) / 127.0) ** 1.5 / norm)
    peak = float(np.abs(out).max())
    if peak > 0:
        out *= 0.9 / peak
    return out


def _fluidsynth_wav(df: pd.DataFrame, sample_rate: int, soundfont: Path, timeout: float) -> bytes:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("the fluidsynth program is not installed")
    with tempfile.TemporaryDirectory(prefix="smu_audio_") as tmp:
        mid, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        notes_to_midi(df).write(str(mid))
        cmd = [exe, "-ni", "-q", "-g", "0.7", "-r", str(int(sample_rate)), "-T", "wav",
               "-F", str(wav_path), str(soundfont), str(mid)]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if res.returncode != 0 or not wav_path.is_file() or wav_path.stat().st_size <= 44:
            raise RuntimeError(f"fluidsynth failed (code {res.returncode}): "
                               f"{res.stderr.decode(errors='replace')[-300:]}")
        return _to_mono16(wav_path.read_bytes())


def _to_mono16(data: bytes) -> bytes:
    """Re-encode a fluidsynth WAV (often stereo, 16 bit) as mono 16-bit WAV."""
    with wave.open(io.BytesIO(data), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2 ** 31
    else:
        return data
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return wav_bytes(x, rate)


def synthesize(df: pd.DataFrame, *, engine: str = "auto", sample_rate: int = 22050,
               max_seconds: float | None = 90.0, timeout: float = 60.0) -> Audio:
    """Render a notes table to WAV. See the module docstring for the engine rules."""
    if engine not in ("auto", "fluidsynth", "builtin"):
        raise ValueError("engine must be 'auto', 'fluidsynth' or 'builtin'")
    for c in ("pitch", "start_sec", "end_sec"):
        if c not in df.columns:
            raise ValueError(f"the notes table needs a {c!r} column to be played")
    df = _clip(df, max_seconds)
    fallback_reason = ""
    if engine in ("auto", "fluidsynth") and len(df):
        sf = find_soundfont()
        if sf is not None and shutil.which("fluidsynth"):
            try:
                wav = _fluidsynth_wav(df, sample_rate, sf, timeout)
                return Audio(wav, f"fluidsynth ({sf.name})", sample_rate, _wav_seconds(wav))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                if engine == "fluidsynth":
                    raise RuntimeError(str(e)) from None
                fallback_reason = f" (fluidsynth failed: {str(e)[:120]})"
        elif engine == "fluidsynth":
            raise RuntimeError("fluidsynth or a General MIDI soundfont is not installed")
    samples = builtin_synth(df, sample_rate)
    wav = wav_bytes(samples, sample_rate)
    return Audio(wav, "built-in sine synth" + fallback_reason, sample_rate, len(samples) / sample_rate)


def _wav_seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav), "rb") as w:
        return w.getnframes() / float(w.getframerate())
