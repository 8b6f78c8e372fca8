"""MidiBert: configs, shapes, padding, masker head, save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch

from smu_explain.checkpoint import CONFIG_NAME, TOKENIZER_NAME, WEIGHTS_NAME, load_model, save_checkpoint
from smu_explain.model import MidiBert, ModelConfig, unwrap
from smu_explain.tokenizer import MASK_ID, N_SPECIAL, PAD_ID, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

ATTRS = ["bar", "position", "pitch", "duration"]
VOCAB = [34, 34, 88, 66]


def tiny(**kw) -> MidiBert:
    torch.manual_seed(0)
    return MidiBert(ModelConfig.named("tiny", VOCAB, ATTRS, **kw)).eval()


def rand_tokens(B: int, L: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(N_SPECIAL, v, (B, L), generator=g) for v in VOCAB], dim=-1)


def test_named_sizes():
    with torch.device("meta"):
        t = MidiBert(ModelConfig.named("tiny", VOCAB, ATTRS))
        s = MidiBert(ModelConfig.named("small", VOCAB, ATTRS))
        b = MidiBert(ModelConfig.named("base", VOCAB, ATTRS))
    assert t.num_parameters() < 1_000_000
    sc, bc = s.config, b.config
    assert (sc.n_layers, sc.d_model, sc.n_heads, sc.d_ff) == (4, 256, 4, 1024)
    assert (bc.n_layers, bc.d_model, bc.n_heads, bc.d_ff) == (12, 768, 12, 3072)
    assert len(s.blocks) == 4 and len(b.blocks) == 12
    # 12 x 768 encoder: ~85M non-embedding parameters (7.08M per layer)
    assert 84e6 < b.num_parameters(non_embedding=True) < 90e6
    assert s.masker_head[0].out_features == 256 and b.masker_head[0].in_features == 768
    with pytest.raises(ValueError, match="unknown model size"):
        ModelConfig.named("huge", VOCAB, ATTRS)
    assert ModelConfig.named("tiny", VOCAB, ATTRS, max_len=1024).max_len == 1024


def test_real_tokenizer_vocab():
    tok = Tokenizer()
    m = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes))
    assert [h.out_features for h in m.out_heads] == tok.vocab_sizes
    assert (PAD_ID, MASK_ID) == (0, 1)


@pytest.mark.parametrize("bad", [
    dict(vocab_sizes=[10, 10], attributes=["a"]),
    dict(vocab_sizes=[10, 2], attributes=["a", "b"]),
    dict(vocab_sizes=[10], attributes=["a"], d_model=30, n_heads=4),
    dict(vocab_sizes=[10], attributes=["a"], dropout=1.0),
])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_config_json_round_trip():
    c = ModelConfig.named("small", VOCAB, ATTRS, dropout=0.05)
    c2 = ModelConfig.from_json(c.to_json())
    assert c2 == c
    d = json.loads(c.to_json())
    d["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict(d)


def test_shapes_and_masker_range():
    m = tiny()
    x = rand_tokens(3, 20)
    am = torch.ones(3, 20, dtype=torch.bool)
    am[2, 15:] = False
    h = m.encode(x, am)
    assert h.shape == (3, 20, 64)
    logits = m.heads(h)
    assert [lg.shape for lg in logits] == [(3, 20, v) for v in VOCAB]
    s = m.masker(h)
    assert s.shape == (3, 20) and bool(((s > 0) & (s < 1)).all())
    assert torch.allclose(torch.sigmoid(m.masker_logits(h)), s)
    out = m(x, am, heads_at=am, masker=True)
    assert [lg.shape for lg in out["logits"]] == [(int(am.sum()), v) for v in VOCAB]
    assert torch.allclose(out["logits"][2], logits[2][am], atol=1e-6)
    out2 = m(x, am, masker=True)
    assert "logits" not in out2
    assert torch.allclose(out2["masker_logits"], m.masker_logits(out2["hidden"]))


def test_padding_does_not_change_real_tokens():
    m = tiny()
    x = rand_tokens(1, 12)
    h_alone = m.encode(x, torch.ones(1, 12, dtype=torch.bool))
    padded = torch.cat([x, rand_tokens(1, 7, seed=5)], dim=1)  # garbage after the real tokens
    am = torch.zeros(1, 19, dtype=torch.bool)
    am[0, :12] = True
    h_pad = m.encode(padded, am)
    assert torch.allclose(h_alone, h_pad[:, :12], atol=1e-5)
    # and without the mask the garbage does leak in (the test can fail)
    h_leak = m.encode(padded, None)
    assert not torch.allclose(h_alone, h_leak[:, :12], atol=1e-3)


def test_full_mask_fast_path_and_all_padding_row():
    m = tiny()
    x = rand_tokens(2, 10)
    full = torch.ones(2, 10, dtype=torch.bool)
    assert torch.allclose(m.encode(x, full), m.encode(x, None))
    am = full.clone()
    am[1] = False  # a sample made only of padding must not produce NaN for the others
    h = m.encode(x, am)
    assert torch.isfinite(h).all()


def test_too_long_and_bad_shapes():
    m = tiny(max_len=16)
    with pytest.raises(ValueError, match="max_len"):
        m.encode(rand_tokens(1, 17))
    with pytest.raises(ValueError, match="tokens must be"):
        m.encode(rand_tokens(1, 8)[..., :3])
    bad = rand_tokens(1, 8)
    bad[0, 3, 2] = VOCAB[2]
    with pytest.raises(ValueError, match="'pitch' has ids >= 88"):
        m.encode(bad)
    with pytest.raises(ValueError, match="negative"):
        m.encode(-rand_tokens(1, 8))
    with pytest.raises(ValueError, match="attention_mask"):
        m.encode(rand_tokens(1, 8), torch.ones(1, 9, dtype=torch.bool))


def test_gradients_reach_every_recoverer_parameter():
    m = tiny().train()
    x = rand_tokens(2, 16)
    out = m(x, None, heads=True, masker=True)
    loss = sum(lg.logsumexp(-1).mean() for lg in out["logits"]) + out["masker_logits"].mean()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_save_load_round_trip(tmp_path):
    m = tiny()
    x = rand_tokens(2, 16)
    d = tmp_path / "ckpt"
    tok = Tokenizer(TokenizerConfig(max_bar_skip=31, n_positions=32))  # the vocabularies of VOCAB
    assert tok.vocab_sizes == VOCAB
    save_checkpoint(d, m, extra={"tokenizer": tok.config.to_dict(), "strategy": {"name": "random"}})
    assert sorted(p.name for p in d.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME]
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt"]  # no temp leftovers
    meta = json.loads((d / CONFIG_NAME).read_text())
    assert meta["model"]["vocab_sizes"] == VOCAB and "tokenizer" not in meta  # the tokenizer has its own file
    assert json.loads((d / TOKENIZER_NAME).read_text())["max_len"] == 512
    m2 = load_model(d).eval()
    assert m2.checkpoint_info["strategy"] == {"name": "random"}
    assert torch.allclose(m.encode(x), m2.encode(x))
    # overwrite in place (existing folder): new weights replace the old ones
    with torch.no_grad():
        m.out_heads[0].bias.fill_(0.5)
    save_checkpoint(d, m)
    m3 = load_model(d)
    assert torch.allclose(m3.out_heads[0].bias, torch.full_like(m3.out_heads[0].bias, 0.5))
    assert sorted(p.name for p in d.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no stale tokenizer.json
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x", m, extra={"model": {}})


def test_unwrap():
    m = tiny()

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(Wrapper(Wrapper(m))) is m
    with pytest.raises(TypeError):
        unwrap(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- positions

def test_rope_scores_depend_only_on_relative_distance():
    from smu_explain.model import apply_rope, rope_tables

    g = torch.Generator().manual_seed(0)
    cos, sin = rope_tables(64, 16)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def score(i: int, j: int) -> float:
        qi = apply_rope(q[None], cos[i:i + 1], sin[i:i + 1])[0]
        kj = apply_rope(k[None], cos[j:j + 1], sin[j:j + 1])[0]
        return float(qi @ kj)

    for i, j, s in ((3, 5, 10), (0, 7, 40), (20, 2, 30)):
        assert score(i, j) == pytest.approx(score(i + s, j + s), abs=1e-4)
    assert score(3, 5) != pytest.approx(score(3, 9), abs=1e-3)  # but distance matters
    # a rotation keeps norms
    assert float(apply_rope(q[None], cos[9:10], sin[9:10]).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def cfg(**kw) -> ModelConfig:
    return ModelConfig.named("tiny", VOCAB, ATTRS, **kw)


def test_position_modes_and_legacy_configs(tmp_path):
    rope = MidiBert(cfg(position="rope"))
    absolute = MidiBert(cfg(position="absolute"))
    assert rope.pos is None and absolute.pos is not None
    assert not any("pos" in k.split(".")[0] for k in rope.state_dict())
    assert rope.num_parameters() == absolute.num_parameters() - absolute.pos.weight.numel()
    # new configs default to rope + torch init; a config.json written before the fields existed
    # means absolute positions and the N(0, 0.02) init it was trained with
    assert ModelConfig(**{**cfg().to_dict(), "position": "rope"}).position == "rope"
    legacy = cfg(position="absolute").to_dict()
    del legacy["position"], legacy["init"], legacy["rope_base"]
    old = ModelConfig.from_dict(legacy)
    assert (old.position, old.init) == ("absolute", "normal")
    with pytest.raises(ValueError, match="position"):
        cfg(position="alibi")
    with pytest.raises(ValueError, match="init"):
        cfg(init="xavier")
    # an old checkpoint (no position key, a pos table in the weights) still loads
    save_checkpoint(tmp_path / "old", absolute)
    meta = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    for key in ("position", "init", "rope_base"):
        del meta["model"][key]
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(meta))
    back = load_model(tmp_path / "old")
    assert back.config.position == "absolute"
    assert torch.equal(back.pos.weight, absolute.pos.weight)


@pytest.mark.parametrize("position", ["rope", "absolute"])
def test_attention_probs_reproduce_the_fused_attention(position):
    m = MidiBert(cfg(position=position)).eval()
    x = torch.randn(2, 12, m.config.d_model, generator=torch.Generator().manual_seed(1))
    attn = m.blocks[0].attn
    w = attn.attention_probs(x).float()  # (B, H, L, L)
    B, L, D = x.shape
    v = attn.qkv(x).view(B, L, 3, attn.n_heads, D // attn.n_heads)[:, :, 2].transpose(1, 2)
    mine = attn.proj((w @ v).transpose(1, 2).reshape(B, L, D))
    assert torch.allclose(mine, attn(x, None), atol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, attn.n_heads, L))
    # the block's own view: the probabilities of its normalised input (what explain.py reads)
    assert torch.equal(m.blocks[0].attention_probs(x), attn.attention_probs(m.blocks[0].ln1(x)))


@pytest.mark.parametrize("kw", [dict(position="absolute"), dict(position="rope"),
                                dict(position="relative_key_query"),
                                dict(arch="bert", position="absolute"),
                                dict(arch="bert", position="relative_key_query")])
@pytest.mark.parametrize("padded", [False, True])
def test_encode_rows_equals_the_whole_pass_at_those_rows(kw, padded):
    """``encode(..., rows=)`` (the last block computed at the asked rows only, where the model allows)
    gives the whole pass's hidden states at those rows, in any order and with repeats, padded or not."""
    m = tiny(**kw)
    tok = rand_tokens(3, 20, seed=5)
    am = None
    if padded:
        am = torch.ones(3, 20, dtype=torch.bool)
        am[1, 14:] = False
        am[2, 3:] = False
    rows = torch.tensor([19, 0, 7, 7, 13])
    with torch.no_grad():
        whole = m.encode(tok, am)
        part = m.encode(tok, am, rows=rows)
    assert part.shape == (3, 5, m.config.d_model)
    assert torch.allclose(part, whole[:, rows], atol=1e-5, rtol=1e-5)
    # the shortcut is taken where it can be: the last block is not run on all rows then
    if kw.get("arch") != "bert" and kw["position"] != "relative_key_query":
        seen = []
        h = m.blocks[-1].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
        with torch.no_grad():
            m.encode(tok, am, rows=rows)
        h.remove()
        assert seen == []  # Block.forward_at, not Block.forward
    with pytest.raises(ValueError, match="rows"):
        m.encode(tok, am, rows=torch.tensor([20]))


def test_encode_rows_gradients_match_the_whole_pass():
    m = tiny(position="rope").train()
    m.drop.p = 0.0
    for b in m.blocks:
        b.drop.p = 0.0
    tok = rand_tokens(2, 12, seed=1)
    rows = torch.tensor([3, 11])
    m.zero_grad()
    m.encode(tok)[:, rows].square().sum().backward()
    g_whole = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    m.encode(tok, rows=rows).square().sum().backward()
    for n, p in m.named_parameters():
        if n in g_whole:
            assert torch.allclose(p.grad, g_whole[n], atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("kw", [dict(position="rope"), dict(position="absolute"),
                                dict(arch="bert", position="relative_key_query")])
def test_only_heads_at_gives_the_whole_pass_rows_and_logits(kw):
    """forward(only_heads_at=True): hidden and logits at the heads_at rows, in hidden[heads_at] order,
    as the whole pass gives them; per-sequence selections of different sizes, padding, an empty row."""
    m = tiny(**kw)
    tok = rand_tokens(4, 18, seed=2)
    am = torch.ones(4, 18, dtype=torch.bool)
    am[2, 11:] = False
    sel = torch.zeros(4, 18, dtype=torch.bool)
    sel[0, [1, 5, 17]] = True
    sel[1, [0]] = True
    sel[2, [3, 4, 9, 10]] = True  # row 3 selects nothing
    with torch.no_grad():
        whole = m(tok, am, heads_at=sel)
        part = m(tok, am, heads_at=sel, only_heads_at=True)
    assert part["hidden"].shape == (8, m.config.d_model)
    assert torch.allclose(part["hidden"], whole["hidden"][sel], atol=1e-5, rtol=1e-5)
    for a, b in zip(part["logits"], whole["logits"], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        none = m(tok, am, heads_at=torch.zeros_like(sel), only_heads_at=True)
    assert none["hidden"].shape == (0, m.config.d_model)
    with pytest.raises(ValueError, match="only_heads_at"):
        m(tok, am, only_heads_at=True)
