"""Importing published checkpoints (issue 20): proof without the real weights.

A randomly initialised reference is built the way each publisher builds its model: a
``transformers.BertModel`` (relative_key_query, the 4.x line that has it) plus the authors'
embedding / projection / head layout with their key names and shapes. It is saved the way the
publisher saves it (MidiBERT-Piano: a pickled ``model.ckpt`` with a ``state_dict``;
Adversarial-MidiBERT: a Hugging Face snapshot folder, ``config.json`` + ``model.safetensors``),
imported with ``smu import``, and the imported model's outputs must match the reference's on
real sample_midi tokens. A checkpoint with one tensor renamed or reshaped is a typed error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) >= 5:  # pragma: no cover - the test extra pins <5
    pytest.skip("the reference needs transformers 4.x (5.x has no relative positions)", allow_module_level=True)

from smu_explain.checkpoint import load_checkpoint  # noqa: E402
from smu_explain.cli import main  # noqa: E402
from smu_explain.errors import SMUCheckpointError  # noqa: E402
from smu_explain.published import import_checkpoint, vocab_permutation  # noqa: E402
from smu_explain.tokenizer import Tokenizer  # noqa: E402
from smu_explain.tokenizer_config import TokenizerConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample_midi").glob("*.mid"))
CP_SIZES = (4, 18, 88, 66)


class Embeddings(nn.Module):
    """The publishers' attribute embedding: a table scaled by sqrt(width) (key ``lut``)."""

    def __init__(self, n, d):
        super().__init__()
        self.lut = nn.Embedding(n, d)
        self.d = d

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d)


class ReferenceMidiBert(nn.Module):
    """MidiBERT's layout with its key names: ``bert`` (transformers), ``word_emb.{j}.lut``, ``in_linear``."""

    def __init__(self, sizes, emb=16, hidden=32, layers=2, heads=4, max_len=64, tw_attention=False):
        super().__init__()
        cfg = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                      intermediate_size=2 * hidden, max_position_embeddings=max_len,
                                      position_embedding_type="relative_key_query", attn_implementation="eager")
        self.bert = transformers.BertModel(cfg)
        self.word_emb = nn.ModuleList(Embeddings(n, emb) for n in sizes)
        self.in_linear = nn.Linear(emb * len(sizes), hidden)
        if tw_attention:  # Adversarial-MidiBERT keeps an unused tw_attention in its state dict
            e = emb * len(sizes)
            self.attention_linear = nn.Sequential(nn.Linear(e, e // 2), nn.ReLU(), nn.Linear(e // 2, e // 2),
                                                  nn.ReLU(), nn.Linear(e // 2, e), nn.Sigmoid())

    def forward(self, ids, attn):
        x = self.in_linear(torch.cat([e(ids[..., j]) for j, e in enumerate(self.word_emb)], dim=-1))
        return self.bert(inputs_embeds=x, attention_mask=attn).last_hidden_state


class ReferenceLM(nn.Module):
    """Adversarial-MidiBERT's MidiBertLM + Masker: ``midibert.*``, ``mask_lm.proj.{j}``, ``masker.linear``."""

    def __init__(self, sizes, **kw):
        super().__init__()
        self.midibert = ReferenceMidiBert(sizes, tw_attention=True, **kw)
        h = self.midibert.in_linear.out_features
        self.mask_lm = nn.Module()
        self.mask_lm.proj = nn.ModuleList(nn.Linear(h, n) for n in sizes)
        self.masker = nn.Module()
        self.masker.linear = nn.Sequential(nn.Dropout(0.1), nn.Linear(h, 256), nn.ReLU(), nn.Linear(256, 1),
                                           nn.Sigmoid())


def _randomise(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _their_ids(our_tokens: np.ndarray, layout: str, sizes) -> torch.Tensor:
    """Our token ids -> the publisher's (the inverse of the import's permutation)."""
    cols = [np.asarray(vocab_permutation(layout, j, n))[our_tokens[..., j]] for j, n in enumerate(sizes)]
    return torch.as_tensor(np.stack(cols, axis=-1))


def _cp_batch(max_len=64):
    """Two windows of real sample_midi tokens (CP, MidiBERT's binning), the second padded."""
    tok = Tokenizer(TokenizerConfig(max_bar_skip=1, max_len=max_len))
    seqs = []
    for f in SAMPLES[:2]:
        t = tok.encode(tok.read(f))[:max_len]
        seqs.append(t)
    seqs[1] = seqs[1][: max_len // 2]
    L = max(len(s) for s in seqs)
    out = np.zeros((len(seqs), L, 4), dtype=np.int64)
    am = np.zeros((len(seqs), L), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        am[i, : len(s)] = True
    return out, am


@pytest.fixture(scope="module")
def midibert_ckpt(tmp_path_factory):
    """MidiBERT-Piano's way: torch.save({"epoch", "state_dict": midibert.state_dict(), ...}, model.ckpt)."""
    torch.manual_seed(0)
    ref = _randomise(ReferenceMidiBert(CP_SIZES))
    path = tmp_path_factory.mktemp("midibert") / "model.ckpt"
    torch.save({"epoch": 3, "state_dict": ref.state_dict(), "best_acc": 0.5,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5}]}}, path)
    return ref, path


def test_midibert_ckpt_imports_and_matches_the_reference(midibert_ckpt, tmp_path):
    ref, path = midibert_ckpt
    report = import_checkpoint(path, tmp_path / "imported")
    assert report.layout == "midibert-cp" and not report.has_recovery_heads and not report.has_masker
    assert report.attributes == ["bar", "position", "pitch", "duration"]
    assert "bert.pooler.dense.weight" in report.dropped and "bert.embeddings.word_embeddings.weight" in report.dropped
    ck = load_checkpoint(tmp_path / "imported", kind="pretrained")
    model = ck.model.eval()
    assert ck.tokenizer.config.max_bar_skip == 1 and ck.tokenizer.vocab_sizes == list(CP_SIZES)
    ours, am = _cp_batch()
    with torch.no_grad():
        want = ref(_their_ids(ours, "midibert-cp", CP_SIZES), torch.as_tensor(am).long())
        got = model.encode(torch.as_tensor(ours), torch.as_tensor(am))
    m = torch.as_tensor(am)
    assert torch.allclose(got[m], want[m], atol=1e-5, rtol=0), (got[m] - want[m]).abs().max()


def test_cli_import_prints_what_it_found(midibert_ckpt, tmp_path, capsys):
    _, path = midibert_ckpt
    assert main(["import", str(path), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "midibert-cp" in out and "parameters" in out and "recovery heads: no" in out
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "m" / "model.safetensors").is_file()


@pytest.mark.parametrize("damage", ["rename", "reshape", "extra", "drop"])
def test_a_damaged_checkpoint_is_a_typed_error_and_writes_nothing(midibert_ckpt, tmp_path, damage):
    ref, _ = midibert_ckpt
    sd = dict(ref.state_dict())
    key = "bert.encoder.layer.1.attention.self.distance_embedding.weight"
    if damage == "rename":
        sd["bert.encoder.layer.1.attention.self.distance_embeddings.weight"] = sd.pop(key)
    elif damage == "reshape":
        sd[key] = sd[key][:-2]
    elif damage == "extra":
        sd["bert.encoder.layer.1.attention.self.surprise"] = torch.zeros(3)
    else:
        del sd["bert.encoder.layer.1.output.dense.weight"]
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(SMUCheckpointError) as e:
        import_checkpoint(path, tmp_path / "out")
    assert "distance_embedding" in str(e.value) or "output.dense" in str(e.value) or "surprise" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert main(["import", str(path), "--out", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()


def test_a_pickle_that_names_a_class_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(SMUCheckpointError, match="refused: loading it would call builtins.print"):
        import_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_code_running_pickle_is_named_as_such_in_plain_words(tmp_path, capsys):
    """The refusal names what the file would call; it never repeats torch's advice to load it
    with weights_only=False, nor its terminal colour codes or warnings."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w')",))

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload()}, path, pickle_module=pickle)
    assert main(["import", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "would call exec" in err and "\x1b" not in err and "Warning" not in err
    assert "will likely succeed" not in err and not marker.exists() and not (tmp_path / "out").exists()


def test_a_compressed_torch_archive_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    import zipfile

    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(256, 1024)}}, plain)  # 1 MB of zeros
    packed = tmp_path / "packed.ckpt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert packed.stat().st_size < plain.stat().st_size // 50

    def never(*a, **k):
        raise AssertionError("torch.load ran on a compressed archive")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(SMUCheckpointError, match="compressed record"):
        import_checkpoint(packed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("eps", [-1.0, 0, 1e308, "x", True, None, [1e-12]])
def test_a_bad_layer_norm_eps_in_config_json_is_refused(midibert_ckpt, tmp_path, eps):
    from safetensors.torch import save_file

    ref, _ = midibert_ckpt
    snap = tmp_path / "snap"
    snap.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({"layer_norm_eps": eps}))
    with pytest.raises(SMUCheckpointError, match="layer_norm_eps must be a number in"):
        import_checkpoint(snap, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"PK\x03\x04truncated"])
def test_truncated_or_empty_files_are_typed_errors(tmp_path, content):
    path = tmp_path / "w.ckpt"
    path.write_bytes(content)
    with pytest.raises(SMUCheckpointError):
        import_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_config_that_lies_is_refused(midibert_ckpt, tmp_path):
    from safetensors.torch import save_file

    ref, _ = midibert_ckpt
    snap = tmp_path / "snap"
    snap.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 2}))
    with pytest.raises(SMUCheckpointError, match="contradicts"):
        import_checkpoint(snap, tmp_path / "out")
    (snap / "config.json").write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2,
                                                  "position_embedding_type": "relative_key_query"}))
    import_checkpoint(snap, tmp_path / "out")  # the truth is accepted


def test_nan_weights_are_refused(midibert_ckpt, tmp_path):
    ref, _ = midibert_ckpt
    sd = dict(ref.state_dict())
    sd["in_linear.weight"] = sd["in_linear.weight"].clone()
    sd["in_linear.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(SMUCheckpointError, match="NaN"):
        import_checkpoint(path, tmp_path / "out")


# ----------------------------------------------------------------------------- Adversarial-MidiBERT (Octuple, HF snapshot)

def _octuple_batch(max_len=64):
    from smu_explain.octuple import OctupleIds

    tok = OctupleIds(max_len=max_len)
    seqs = [tok.encode(tok.read(f))[:max_len] for f in SAMPLES[:2]]
    seqs[1] = seqs[1][: max_len // 2]
    L = max(len(s) for s in seqs)
    out = np.zeros((2, L, 8), dtype=np.int64)
    am = np.zeros((2, L), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        am[i, : len(s)] = True
    return tok, out, am


@pytest.fixture(scope="module")
def adversarial_snapshot(tmp_path_factory):
    """Adversarial-MidiBERT's way on the Hub: a folder with config.json + model.safetensors."""
    from safetensors.torch import save_file

    from smu_explain.octuple import OctupleTokenizer

    sizes = OctupleTokenizer().vocab_sizes
    torch.manual_seed(1)
    ref = _randomise(ReferenceLM(sizes))
    snap = tmp_path_factory.mktemp("hub") / "Adversarial-MidiBERT"
    snap.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2,
                                                  "max_position_embeddings": 64,
                                                  "position_embedding_type": "relative_key_query"}))
    return ref, sizes, snap


def test_adversarial_snapshot_imports_and_matches_the_reference(adversarial_snapshot, tmp_path):
    ref, sizes, snap = adversarial_snapshot
    report = import_checkpoint(snap, tmp_path / "adv")
    assert report.layout == "adversarial-octuple" and report.has_recovery_heads and report.has_masker
    assert any(k.startswith("midibert.attention_linear") or k.startswith("attention_linear") for k in report.dropped)
    ck = load_checkpoint(tmp_path / "adv", kind="pretrained")
    model = ck.model.eval()
    tok, ours, am = _octuple_batch()
    assert type(ck.tokenizer).__name__ == "OctupleIds" and ck.tokenizer.vocab_sizes == list(sizes)
    theirs = torch.as_tensor(tok.to_theirs(ours))
    m = torch.as_tensor(am)
    with torch.no_grad():
        want = ref.midibert(theirs, m.long())
        out = model(torch.as_tensor(ours), m, heads=True, masker=True)
        got = out["hidden"]
        assert torch.allclose(got[m], want[m], atol=1e-5, rtol=0)
        # recovery heads: the same logits, rows in our id order
        for j, head in enumerate(ref.mask_lm.proj):
            want_j = head(want)[..., torch.as_tensor(tok.perm[j])]
            assert torch.allclose(out["logits"][j][m], want_j[m], atol=1e-5, rtol=0)
        # the masker head: the same score (the authors' Masker ends in a sigmoid)
        want_s = ref.masker.linear(want).squeeze(-1)
        assert torch.allclose(torch.sigmoid(out["masker_logits"])[m], want_s[m], atol=1e-5, rtol=0)


def test_octuple_ids_round_trip_the_authors_ids():
    tok, ours, am = _octuple_batch()
    assert (ours[am] >= 2).all()  # real notes never take PAD / MASK ids
    assert np.array_equal(tok.to_ours(tok.to_theirs(ours)), ours)
    piece = tok.read(SAMPLES[0])
    assert np.array_equal(tok.to_theirs(tok.encode(piece)), tok.inner.encode(piece))


def test_attention_maps_of_an_imported_model_are_transformers_own(adversarial_snapshot, tmp_path):
    """Why's attention view of an imported model: the probabilities transformers' eager BERT returns."""
    from smu_explain.attention import attention_weights

    ref, sizes, snap = adversarial_snapshot
    import_checkpoint(snap, tmp_path / "adv")
    model = load_checkpoint(tmp_path / "adv", kind="pretrained").model.eval()
    tok, ours, am = _octuple_batch()
    row = ours[0][am[0]]
    with torch.no_grad():
        x = ref.midibert.in_linear(torch.cat([e(torch.as_tensor(tok.to_theirs(row))[None, :, j])
                                              for j, e in enumerate(ref.midibert.word_emb)], dim=-1))
        want = ref.midibert.bert(inputs_embeds=x, output_attentions=True).attentions
    got = attention_weights(model, row)
    assert got.shape == (len(want), want[0].shape[1], len(row), len(row))
    for layer, w in enumerate(want):
        assert np.allclose(got[layer], w[0].double().numpy(), atol=1e-5), layer


# ----------------------------------------------------------------------------- the app opens imported models

def _run(page, **state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / page), default_timeout=300)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_explore_and_why_open_imported_models(midibert_ckpt, adversarial_snapshot, tmp_path, monkeypatch):
    from smu_explain import appstate as A

    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    import_checkpoint(midibert_ckpt[1], tmp_path / "midibert-piano")
    import_checkpoint(adversarial_snapshot[2], tmp_path / "adversarial-midibert")
    # MidiBERT-Piano's checkpoint: the encoder only -> plain sentences, no masker view, no guesses
    at = _run("explore.py", **{A.K_MODEL_A: str(tmp_path / "midibert-piano")})
    assert not at.exception and not at.error
    assert any("without a masker head" in w.value for w in at.warning)
    assert any("without its recovery heads" in i.value for i in at.info)
    # Adversarial-MidiBERT's layout: masker view and recovery, no warning about heads
    at = _run("explore.py", **{A.K_MODEL_A: str(tmp_path / "adversarial-midibert")})
    assert not at.exception and not at.error
    assert not any("masker head" in w.value for w in at.warning)
    assert any("Did this model learn" in c.value for c in at.caption)
    at = _run("why.py", **{A.K_MODEL_A: str(tmp_path / "adversarial-midibert")})
    assert not at.exception and not at.error


def test_compare_sets_an_imported_model_beside_a_project_model(adversarial_snapshot, midibert_ckpt, tmp_path,
                                                               monkeypatch):
    from app_helpers import make_model

    from smu_explain import appstate as A

    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    ours = make_model(tmp_path / "ours", seed=3)
    import_checkpoint(adversarial_snapshot[2], tmp_path / "adversarial-midibert")
    import_checkpoint(midibert_ckpt[1], tmp_path / "midibert-piano")
    at = _run("compare.py", **{A.K_MODEL_A: str(tmp_path / "adversarial-midibert"), A.K_MODEL_B: str(ours)})
    assert not at.exception and not at.error
    at = _run("compare.py", **{A.K_MODEL_A: str(ours), A.K_MODEL_B: str(tmp_path / "midibert-piano")})
    assert not at.exception and not at.error
    assert any("without its recovery heads" in i.value for i in at.info)


def test_smu_explain_warns_about_absent_heads(midibert_ckpt, tmp_path, capsys):
    _, path = midibert_ckpt
    import_checkpoint(path, tmp_path / "mp")
    assert main(["explain", str(SAMPLES[0]), "--model", str(tmp_path / "mp"), "--rows", "1"]) == 0
    err = capsys.readouterr().err
    assert "without a masker head" in err and "without recovery heads" in err
