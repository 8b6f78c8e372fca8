"""from_pretrained reads only JSON + safetensors: pickles are refused and never run."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch

from smu_explain.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_model, save_checkpoint
from smu_explain.errors import SMUCheckpointError
from smu_explain.model import MidiBert, ModelConfig

ATTRS = ["bar", "position", "pitch", "duration"]
VOCAB = [34, 34, 88, 66]


class Evil:
    """Unpickling this creates a marker file (stands in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def saved(tmp_path) -> tuple[MidiBert, os.PathLike]:
    torch.manual_seed(0)
    m = MidiBert(ModelConfig.named("tiny", VOCAB, ATTRS))
    d = tmp_path / "ok"
    save_checkpoint(d, m)
    return m, d


def test_evil_pickle_really_runs_code_when_unpickled(tmp_path):
    # control: proves the payload used below would create its marker if anyone unpickled it
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl", "model.ckpt"])
def test_pickle_only_checkpoint_is_refused_and_not_run(tmp_path, name):
    _, ok = saved(tmp_path)
    d = tmp_path / "evil"
    d.mkdir()
    (d / CONFIG_NAME).write_text((ok / CONFIG_NAME).read_text())
    marker = tmp_path / "pwned"
    (d / name).write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(SMUCheckpointError, match="pickle") as e:
        load_model(d)
    assert name in str(e.value)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_refused_and_not_run(tmp_path):
    _, ok = saved(tmp_path)
    marker = tmp_path / "pwned"
    (ok / WEIGHTS_NAME).write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(SMUCheckpointError, match="corrupt"):
        load_model(ok)
    assert not marker.exists()


def test_loading_never_unpickles(tmp_path, monkeypatch):
    m, d = saved(tmp_path)

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    m2 = load_model(d)
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(SMUCheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    _, d = saved(tmp_path)
    (d / CONFIG_NAME).unlink()
    with pytest.raises(SMUCheckpointError, match="config.json"):
        load_model(d)
    _, d = saved(tmp_path / "b")
    (d / WEIGHTS_NAME).unlink()
    with pytest.raises(SMUCheckpointError, match="no model.safetensors"):
        load_model(d)


def test_bad_json(tmp_path):
    _, d = saved(tmp_path)
    (d / CONFIG_NAME).write_text("{not json")
    with pytest.raises(SMUCheckpointError, match="not valid JSON"):
        load_model(d)
    (d / CONFIG_NAME).write_text(json.dumps({"hello": 1}))
    with pytest.raises(SMUCheckpointError, match="model"):
        load_model(d)
    (d / CONFIG_NAME).write_text(json.dumps({"model": {"vocab_sizes": [5], "attributes": ["a", "b"]}}))
    with pytest.raises(SMUCheckpointError, match="invalid model config"):
        load_model(d)


def test_corrupt_safetensors(tmp_path):
    _, d = saved(tmp_path)
    data = (d / WEIGHTS_NAME).read_bytes()
    (d / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SMUCheckpointError, match="corrupt"):
        load_model(d)
    (d / WEIGHTS_NAME).write_bytes(struct.pack("<Q", 10 ** 12) + b"{}")  # absurd header length
    with pytest.raises(SMUCheckpointError, match="corrupt"):
        load_model(d)


def test_shape_mismatch_and_missing_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    _, d = saved(tmp_path)
    meta = json.loads((d / CONFIG_NAME).read_text())
    meta["model"]["vocab_sizes"] = [40, 34, 88, 66]
    (d / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SMUCheckpointError, match="shapes"):
        load_model(d)

    _, d = saved(tmp_path / "b")
    state = load_file(str(d / WEIGHTS_NAME))
    del state["masker_head.0.weight"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(d / WEIGHTS_NAME))
    with pytest.raises(SMUCheckpointError, match="missing tensors masker_head.0.weight") as e:
        load_model(d)
    assert "unexpected tensors extra.weight" in str(e.value)


def test_safetensors_wins_over_pickle_and_pickle_is_untouched(tmp_path):
    m, d = saved(tmp_path)
    marker = tmp_path / "pwned"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(marker)))
    m2 = load_model(d)
    assert torch.equal(m2.in_proj.weight, m.in_proj.weight)
    assert not marker.exists()
