"""checkpoint.py: one save path (config.json + model.safetensors + tokenizer.json, atomic) for
pre-training and fine-tuning, one loader (load_checkpoint -> Checkpoint) for every reader, and
old folders whose tokenizer config is only inside config.json still load."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from conftest import scale_notes

from smu_explain import checkpoint as C
from smu_explain.checkpoint import load_model, save_checkpoint
from smu_explain.cli import main
from smu_explain.errors import SMUCheckpointError
from smu_explain.finetune import build_model
from smu_explain.heads import FineTuneModel
from smu_explain.io import default_file_mode
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TOK = Tokenizer(TokenizerConfig(max_len=16, stride=10))


def pretrained(path: Path, seed: int = 0, tokenizer: Tokenizer | None = TOK, **extra) -> Path:
    torch.manual_seed(seed)
    m = MidiBert(ModelConfig.named("tiny", TOK.vocab_sizes, TOK.attributes, max_len=16))
    if tokenizer is not None:
        extra["tokenizer"] = tokenizer.config.to_dict()
    return save_checkpoint(path, m, extra=extra)


def legacy(folder: Path, dst: Path) -> Path:
    """A copy of ``folder`` in the layout written before tokenizer.json existed: the tokenizer
    config only as the "tokenizer" section of config.json."""
    shutil.copytree(folder, dst)
    tok = json.loads((dst / C.TOKENIZER_NAME).read_text())
    (dst / C.TOKENIZER_NAME).unlink()
    meta = json.loads((dst / C.CONFIG_NAME).read_text())
    meta["tokenizer"] = tok
    (dst / C.CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return dst


def test_pretrained_round_trip_writes_three_files_atomically(tmp_path):
    d = pretrained(tmp_path / "m", strategy={"name": "adversarial"})
    assert sorted(p.name for p in d.iterdir()) == sorted([C.CONFIG_NAME, C.WEIGHTS_NAME, C.TOKENIZER_NAME])
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # written as a temporary sibling, then renamed
    for name in (C.CONFIG_NAME, C.WEIGHTS_NAME, C.TOKENIZER_NAME):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == default_file_mode(), name
    meta = json.loads((d / C.CONFIG_NAME).read_text())
    assert meta["format"] == C.PRETRAINED_FORMAT and "tokenizer" not in meta
    assert TokenizerConfig.load(d / C.TOKENIZER_NAME) == TOK.config
    ck = C.load_checkpoint(d)
    assert ck.kind == "pretrained" and ck.task is None and ck.classes == []
    assert isinstance(ck.model, MidiBert) and ck.encoder is ck.model
    assert ck.tokenizer.config == TOK.config and ck.meta["strategy"] == {"name": "adversarial"}
    assert ck.info["strategy"] == {"name": "adversarial"} and ck.info["tokenizer"] == TOK.config.to_dict()
    again = load_model(d)
    assert again.checkpoint_info == ck.model.checkpoint_info
    for k, v in ck.model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_finetuned_round_trip_carries_the_encoders_tokenizer(tmp_path):
    pre = pretrained(tmp_path / "pre")
    ft = build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=pre, seed=0)
    assert ft.checkpoint_info == {"pretrained": str(pre), "tokenizer": TOK.config.to_dict()}
    d = save_checkpoint(tmp_path / "ft", ft, extra={"results": {"val": {"acc": 0.5}}})
    assert sorted(p.name for p in d.iterdir()) == sorted([C.CONFIG_NAME, C.WEIGHTS_NAME, C.TOKENIZER_NAME])
    meta = json.loads((d / C.CONFIG_NAME).read_text())
    assert meta["format"] == C.FINETUNED_FORMAT and "tokenizer" not in meta and meta["pretrained"] == str(pre)
    ck = C.load_checkpoint(d)
    assert ck.kind == "finetuned" and ck.task == "emotion" and ck.classes == ["Q1", "Q2", "Q3", "Q4"]
    assert isinstance(ck.model, FineTuneModel) and ck.encoder is ck.model.encoder
    assert ck.tokenizer.config == TOK.config and ck.info["results"] == {"val": {"acc": 0.5}}
    assert load_model(d, kind="finetuned").checkpoint_info == ck.info
    # the Checkpoint itself can seed fine-tuning (the CLI loads the folder once)
    again = build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=C.load_checkpoint(pre), seed=0)
    assert again.checkpoint_info == ft.checkpoint_info


def test_old_folders_with_the_tokenizer_inside_config_json_still_load(tmp_path, make_midi):
    """A real saved folder with tokenizer.json removed (its config moved into config.json, as
    every folder written before tokenizer.json): the library, the CLI and fine-tuning read it."""
    new = pretrained(tmp_path / "new", strategy={"name": "random"})
    old = legacy(new, tmp_path / "old")
    assert not (old / C.TOKENIZER_NAME).exists()
    ck = C.load_checkpoint(old)
    assert ck.tokenizer.config == TOK.config and ck.info["tokenizer"] == TOK.config.to_dict()
    assert ck.info["strategy"] == {"name": "random"}
    assert load_model(old).checkpoint_info["tokenizer"] == TOK.config.to_dict()
    ft = build_model("melody", ["melody", "bridge", "piano"], pretrained=old)
    d = save_checkpoint(tmp_path / "ft", ft)  # re-saved: the tokenizer moves to its own file
    assert C.load_checkpoint(d).tokenizer.config == TOK.config and (d / C.TOKENIZER_NAME).is_file()
    midi = make_midi(tmp_path, [(i * 240, 240, 50 + i % 12, 80) for i in range(24)], name="p.mid")
    assert main(["explain", str(midi), "--model", str(old), "--rows", "0"]) == 0
    # an old fine-tuned folder too
    old_ft = legacy(d, tmp_path / "old-ft")
    assert C.load_checkpoint(old_ft).tokenizer.config == TOK.config
    # a legacy section that does not fit the model is refused like a tokenizer.json
    meta = json.loads((old / C.CONFIG_NAME).read_text())
    meta["tokenizer"]["use_velocity"] = True
    (old / C.CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SMUCheckpointError, match="does not match the model"):
        C.load_checkpoint(old)


@pytest.mark.parametrize("folder", ["demo-adversarial", "demo-random", "demo-random/finetuned/melody"])
def test_shipped_models_load(folder):
    d = ROOT / "models" / folder
    if not (d / C.WEIGHTS_NAME).is_file():
        pytest.skip(f"models/{folder} is not there")
    ck = C.load_checkpoint(d)
    assert ck.tokenizer is not None and ck.kind == ("finetuned" if "finetuned" in folder else "pretrained")
    assert list(ck.tokenizer.attributes) == list(ck.encoder.config.attributes)


def test_tokenizer_is_optional_unless_required(tmp_path):
    d = pretrained(tmp_path / "m", tokenizer=None)
    assert not (d / C.TOKENIZER_NAME).exists()
    with pytest.raises(SMUCheckpointError, match="no tokenizer.json"):
        C.load_checkpoint(d)
    ck = C.load_checkpoint(d, require_tokenizer=False)
    assert ck.tokenizer is None and "tokenizer" not in ck.info
    assert C.load_tokenizer(d, required=False) is None


def test_broken_or_mismatched_tokenizer_json(tmp_path):
    d = pretrained(tmp_path / "m")
    (d / C.TOKENIZER_NAME).write_text("{not json")
    with pytest.raises(SMUCheckpointError, match="tokenizer.json is not valid JSON"):
        C.load_checkpoint(d)
    (d / C.TOKENIZER_NAME).write_text(json.dumps({"max_len": 16, "colour": "red"}))
    with pytest.raises(SMUCheckpointError, match="invalid tokenizer config"):
        C.load_checkpoint(d)
    (d / C.TOKENIZER_NAME).write_text(json.dumps([1, 2]))
    with pytest.raises(SMUCheckpointError, match="JSON object"):
        C.load_checkpoint(d)
    TokenizerConfig(max_len=64).save(d / C.TOKENIZER_NAME)
    with pytest.raises(SMUCheckpointError, match="longer than the model's max_len"):
        load_model(d)  # a tokenizer that is there is always checked
    # there but not a file (a folder, a link to a device, a broken link): said so, no other config read
    for make in (lambda p: p.mkdir(), lambda p: p.symlink_to("/dev/zero"), lambda p: p.symlink_to(tmp_path / "x")):
        (d / C.TOKENIZER_NAME).unlink()
        make(d / C.TOKENIZER_NAME)
        with pytest.raises(SMUCheckpointError, match="tokenizer.json is not a regular file"):
            C.load_checkpoint(d)
        if (d / C.TOKENIZER_NAME).is_dir() and not (d / C.TOKENIZER_NAME).is_symlink():
            (d / C.TOKENIZER_NAME).rmdir()
            (d / C.TOKENIZER_NAME).touch()


def test_tokenizer_json_wins_over_an_old_config_section(tmp_path):
    d = pretrained(tmp_path / "m")
    meta = json.loads((d / C.CONFIG_NAME).read_text())
    meta["tokenizer"] = {**TOK.config.to_dict(), "use_velocity": True}  # would not fit
    (d / C.CONFIG_NAME).write_text(json.dumps(meta))
    assert C.load_checkpoint(d).tokenizer.config == TOK.config


def test_resave_replaces_files_and_drops_a_stale_tokenizer(tmp_path):
    d = pretrained(tmp_path / "m")
    os.chmod(d / C.CONFIG_NAME, 0o640)
    torch.manual_seed(5)
    m = MidiBert(ModelConfig.named("tiny", TOK.vocab_sizes, TOK.attributes, max_len=16))
    save_checkpoint(d, m, extra={"tokenizer": TOK})  # a Tokenizer object is fine too
    assert C.load_tokenizer(d).config == TOK.config
    assert stat.S_IMODE(os.stat(d / C.CONFIG_NAME).st_mode) == 0o640  # atomic_write_text keeps the mode
    assert torch.equal(load_model(d).in_proj.weight, m.in_proj.weight)
    save_checkpoint(d, m)
    assert not (d / C.TOKENIZER_NAME).exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_kind_is_checked_before_the_weights(tmp_path):
    pre = pretrained(tmp_path / "pre")
    ft = save_checkpoint(tmp_path / "ft", build_model("folder", ["a", "b"], pretrained=pre))
    with pytest.raises(SMUCheckpointError, match="is a fine-tuned model"):
        load_model(ft)
    with pytest.raises(SMUCheckpointError, match="not a fine-tuned model"):
        C.load_checkpoint(pre, kind="finetuned")
    with pytest.raises(ValueError, match="kind"):
        C.load_checkpoint(pre, kind="other")


def test_task_heads_and_folder_predicates(tmp_path):
    pre = pretrained(tmp_path / "pre")
    save_checkpoint(pre / "finetuned" / "emotion", build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=pre))
    save_checkpoint(pre / "melody", build_model("melody", ["melody", "bridge", "piano"], pretrained=pre))
    (pre / "junk").mkdir()
    (pre / "junk" / C.CONFIG_NAME).write_text("{not json")
    assert [p.name for p in C.task_heads(pre)] == ["melody", "emotion"]
    assert C.task_heads(pre / "melody") == [pre / "melody"]
    assert C.is_checkpoint(pre) and not C.is_checkpoint(pre / "junk")
    assert C.is_finetuned(pre / "melody") and not C.is_finetuned(pre) and not C.is_finetuned(pre / "junk")
    assert C.kind_of(C.read_config(pre / "melody")) == "finetuned"


def test_loading_never_imports_torch_dynamo(tmp_path):
    """The shape check builds the model on the meta device without meta arithmetic (random fills
    skipped, rotary tables on the CPU): meta kernels import torch._dynamo on first use, about a
    second of CPU before the app's first piano roll that nothing else it runs needs."""
    import subprocess
    import sys

    pre = pretrained(tmp_path / "pre")
    ft = save_checkpoint(tmp_path / "ft", build_model("emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=pre, seed=0))
    code = ("import sys\nfrom smu_explain.checkpoint import load_checkpoint\n"
            f"load_checkpoint({str(pre)!r}); load_checkpoint({str(ft)!r}, kind='finetuned')\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_stored_masker_scores_are_masker_view_and_go_stale_with_the_weights(tmp_path, make_midi):
    """stored_scores.store_masker_scores keeps masker_view's columns beside the weights; another set of
    weights (a re-save) or a broken file makes load_masker_scores give nothing, never an error."""
    import hashlib

    import numpy as np

    from smu_explain.explain import masker_view
    from smu_explain.reading import read_piece
    from smu_explain.stored_scores import store_masker_scores

    pre = pretrained(tmp_path / "pre")
    files = [make_midi(tmp_path, scale_notes(30 + 10 * i, step=120 + 60 * i), name=f"p{i}.mid") for i in range(2)]
    store_masker_scores(pre, files)
    stored = C.load_masker_scores(pre)
    assert set(stored) == {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    ck = C.load_checkpoint(pre)
    for f in files:
        view = masker_view(ck.encoder.eval(), ck.tokenizer, read_piece(f.read_bytes(), name=f.stem), 0.15)
        entry = stored[hashlib.sha256(f.read_bytes()).hexdigest()]
        assert entry["n_notes"] == len(view) and entry["name"] == f.name
        np.testing.assert_allclose(entry["score"], view["score"].to_numpy(), rtol=1e-6, atol=1e-7)
        assert entry["frozen"] == np.flatnonzero(view["frozen"]).tolist()
        assert entry["picked"] == np.flatnonzero(view["picked"]).tolist()
    # other weights: stale (the file is kept, the entries ignored)
    pretrained(pre, seed=1)
    assert (pre / C.SCORES_NAME).is_file() and C.load_masker_scores(pre) == {}
    store_masker_scores(pre, files[:1])
    assert len(C.load_masker_scores(pre)) == 1
    (pre / C.SCORES_NAME).write_text("{not json")
    assert C.load_masker_scores(pre) == {}
    (pre / C.SCORES_NAME).unlink()
    assert C.load_masker_scores(pre) == {}


@pytest.mark.parametrize("folder", ["demo-adversarial", "demo-random"])
def test_shipped_models_store_every_samples_masker_scores(folder):
    """The shipped masker_scores.json fits the shipped weights and holds every sample piece
    (re-make with ``python scripts/train_demo_models.py --scores-only`` after re-training)."""
    import hashlib

    d = ROOT / "models" / folder
    if not (d / C.WEIGHTS_NAME).is_file():
        pytest.skip(f"models/{folder} is not there")
    stored = C.load_masker_scores(d)
    samples = sorted((ROOT / "sample_midi").glob("*.mid"))
    assert samples and {hashlib.sha256(f.read_bytes()).hexdigest() for f in samples} <= set(stored)
