"""relattn.py: our relative-position BERT against transformers 4.x's own eager BertModel.

The reference is transformers' ``BertModel`` with ``attn_implementation="eager"`` and
``position_embedding_type="relative_key_query"`` (4.57.x is the last line that has it; the
``test`` extra pins ``transformers>=4.57,<5``). Inputs are real tokens (sample_midi pieces,
tokenized by the project's Tokenizer, embedded and projected like MidiBERT) with padding.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from smu_explain import relattn
from smu_explain.errors import SMUCheckpointError
from smu_explain.relattn import (
    BertEncoder,
    BertEncoderConfig,
    TransformersRelativeError,
    load_bert_state_dict,
    relative_position_bias,
    relative_scores_reference,
)
from smu_explain.tokenizer import PAD_ID, Tokenizer

transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) >= 5:  # the reference has no relative positions there
    pytest.skip("the equivalence tests need transformers 4.x (pip install 'transformers>=4.57,<5')",
                allow_module_level=True)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_midi"
MAX_POS = 1024


def real_tokens(n: int) -> np.ndarray:
    """The first ``n`` compound tokens of the sample pieces, one after another."""
    tok = Tokenizer()
    rows, total = [], 0
    for f in sorted(SAMPLES.glob("*.mid")):
        rows.append(tok.encode(tok.read(f)))
        total += len(rows[-1])
        if total >= n:
            break
    return np.concatenate(rows)[:n]


def make_models(kind: str = "relative_key_query", hidden: int = 32, heads: int = 4, layers: int = 2,
                seed: int = 0, **kw):
    """(transformers' eager BertModel, ours with the same weights), in eval mode. Weights are
    transformers' init made larger where it matters, so that attention is far from uniform and
    the relative terms change the output."""
    torch.manual_seed(seed)
    cfg = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               intermediate_size=2 * hidden, max_position_embeddings=MAX_POS, position_embedding_type=kind,
               vocab_size=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)
    ref = transformers.BertModel(transformers.BertConfig(**cfg, attn_implementation="eager"),
                                 add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "distance_embedding" in name:
                p.normal_(0.0, 0.5)
            elif name.endswith(("query.weight", "key.weight", "value.weight", "attention.output.dense.weight")):
                p.mul_(8.0)
            elif "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = BertEncoder(BertEncoderConfig(**cfg), impl="ours").eval()
    load_bert_state_dict(ours, ref.state_dict())
    return ref, ours


def embedded_batch(L: int, hidden: int, padded: bool, seed: int = 0):
    """(inputs_embeds (2, L, hidden), attention_mask (2, L) or None): real tokens, MidiBERT-style
    per-attribute embeddings + projection; row 1 is padded (a third of it) when ``padded``."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.from_numpy(real_tokens(2 * L)).view(2, L, -1).clone()
    mask = torch.ones(2, L, dtype=torch.long)
    n_pad = L // 3 if padded else 0
    if n_pad:
        tokens[1, L - n_pad:] = PAD_ID
        mask[1, L - n_pad:] = 0
    vocab = int(tokens.max()) + 1
    emb = [torch.randn(vocab, 8, generator=g) for _ in range(tokens.shape[-1])]
    proj = torch.randn(8 * tokens.shape[-1], hidden, generator=g) / math.sqrt(8 * tokens.shape[-1])
    x = torch.cat([e[tokens[..., j]] for j, e in enumerate(emb)], dim=-1) @ proj
    return x, (mask if padded else None)


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    err = float((a - b).abs().max())
    assert err <= tol, f"max abs difference {err:.3g} > {tol}"
    return err


# ----------------------------------------------------------------------------- the bias alone

@pytest.mark.parametrize("L", [1, 2, 7, 129, 300])
@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_bias_is_transformers_einsum(L, kind):
    g = torch.Generator().manual_seed(L)
    q, k = torch.randn(2, 3, L, 16, generator=g), torch.randn(2, 3, L, 16, generator=g)
    table = torch.randn(2 * 512 - 1, 16, generator=g)
    want = relative_scores_reference(q, k, table, 512, kind)
    with torch.no_grad():  # the in-place inference path
        close(relative_position_bias(q, k, table, 512, kind), want, 1e-5)
    qq, kk, tt = (t.clone().requires_grad_() for t in (q, k, table))  # the autograd path
    got = relative_position_bias(qq, kk, tt, 512, kind, block=64)
    close(got.detach(), want, 1e-5)
    # the block size changes the grouping of the matmuls only
    close(relative_position_bias(q, k, table, 512, kind, block=L), want, 1e-5)


def _reference_attention(q, k, v, table, mask=None):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + relative_scores_reference(q, k, table, 512)
    return torch.softmax(s if mask is None else s + mask, -1) @ v


@pytest.mark.parametrize("group_heads", [1, 2, 3])
def test_inference_groups_of_heads_and_the_workspace(monkeypatch, group_heads):
    """Inference builds the bias a few heads at a time in a reused per-thread buffer: any grouping
    (here 1, 2 or all 3 heads, with a padding mask) gives the reference; an output is never
    overwritten by the next call; the buffer serves inference_mode, no_grad and another dtype (float64: bf16 SDPA
    is not available under every ATEN_CPU_CAPABILITY)."""
    g = torch.Generator().manual_seed(group_heads)
    B, H, L, d = 2, 3, 129, 16
    monkeypatch.setattr(relattn, "BIAS_GROUP_BYTES", group_heads * B * L * L * 4)
    q, k, v = (torch.randn(B, H, L, d, generator=g) for _ in range(3))
    table = torch.randn(2 * 512 - 1, d, generator=g)
    mask = torch.zeros(B, 1, 1, L)
    mask[1, ..., L - 40:] = torch.finfo(torch.float32).min
    want = _reference_attention(q, k, v, table, mask)
    with torch.inference_mode():
        first = relattn.relative_attention(q, k, v, table, 512, mask=mask)
    kept = first.clone()
    with torch.no_grad():  # the buffer made under inference_mode is written in place here
        second = relattn.relative_attention(q[:, :, :60], k[:, :, :60], v[:, :, :60], table, 512)
        f64 = relattn.relative_attention(q.double(), k.double(), v.double(), table.double(), 512)
        again = relattn.relative_attention(q, k, v, table, 512, mask=mask)
    close(first, want, 1e-5)
    assert torch.equal(first, kept)
    close(second, _reference_attention(q[:, :, :60], k[:, :, :60], v[:, :, :60], table), 1e-5)
    close(again, want, 1e-5)
    assert f64.dtype == torch.float64  # a buffer of its own dtype
    close(f64, _reference_attention(q.double(), k.double(), v.double(), table.double()), 1e-10)


def test_inference_buffer_is_per_thread():
    """Two threads (two app sessions) attending at once each get their own bias buffer: their
    outputs are their references, every time."""
    import threading

    g = torch.Generator().manual_seed(7)
    inputs = [tuple(torch.randn(1, 4, 200, 16, generator=g) for _ in range(3)) for _ in range(2)]
    table = torch.randn(2 * 512 - 1, 16, generator=g)
    wants = [_reference_attention(q, k, v, table) for q, k, v in inputs]
    errors: list[float] = []

    def work(i: int) -> None:
        q, k, v = inputs[i]
        with torch.no_grad():
            for _ in range(20):
                errors.append(float((relattn.relative_attention(q, k, v, table, 512) - wants[i]).abs().max()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 40 and max(errors) <= 1e-5, max(errors)


def test_bias_refuses_long_sequences_and_wrong_tables():
    q = torch.zeros(1, 1, 9, 4)
    with pytest.raises(ValueError, match="exceeds"):
        relative_position_bias(q, q, torch.zeros(15, 4), 8)
    with pytest.raises(ValueError, match="distance table"):
        relative_position_bias(q, q, torch.zeros(16, 4), 9)


# ----------------------------------------------------------------------------- the whole model

@pytest.mark.parametrize("L", [1, 7, 512, 1000, 1024])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "padded"])
def test_outputs_match_transformers(L, padded):
    ref, ours = make_models(seed=L)
    x, mask = embedded_batch(L, 32, padded, seed=L)
    with torch.no_grad():
        want = ref(inputs_embeds=x, attention_mask=mask).last_hidden_state
        got = ours(inputs_embeds=x, attention_mask=mask)
    close(got, want, 1e-5)
    if padded and L > 3:  # padding is excluded: the real tokens of row 1 do not see it
        with torch.no_grad():
            alone = ours(inputs_embeds=x[1:, : L - L // 3])
        close(alone, got[1, : L - L // 3][None], 1e-5)


@pytest.mark.parametrize("L", [7, 512, 1024])
def test_gradients_match_transformers(L):
    ref, ours = make_models(seed=L + 1)
    x, mask = embedded_batch(L, 32, True, seed=L)
    w = torch.randn(2, L, 32, generator=torch.Generator().manual_seed(L))
    grads = []
    for model in (ref, ours):
        xi = x.clone().requires_grad_()
        out = model(inputs_embeds=xi, attention_mask=mask)
        out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
        ((out * w).sum() / L).backward()
        grads.append({"inputs_embeds": xi.grad, **{n: p.grad for n, p in model.named_parameters()
                                                   if p.grad is not None}})
    want, got = grads
    assert set(got) == set(want) and any("distance_embedding" in n for n in got)
    for name in want:
        close(got[name], want[name], 1e-4)


def test_relative_key_and_absolute_match_transformers():
    for kind in ("relative_key", "absolute"):
        ref, ours = make_models(kind=kind, seed=3)
        x, mask = embedded_batch(300, 32, True, seed=3)
        with torch.no_grad():
            close(ours(inputs_embeds=x, attention_mask=mask),
                  ref(inputs_embeds=x, attention_mask=mask).last_hidden_state, 1e-5)


def test_input_ids_token_types_and_pooler_match_transformers():
    ref, ours = make_models(seed=5)
    ids = torch.randint(0, 5, (2, 40), generator=torch.Generator().manual_seed(5))
    tt = (torch.arange(40) >= 20).long().expand(2, 40)
    with torch.no_grad():
        close(ours(input_ids=ids, token_type_ids=tt),
              ref(input_ids=ids, token_type_ids=tt).last_hidden_state, 1e-5)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, position_embedding_type="relative_key_query",
                                  vocab_size=5, attn_implementation="eager")
    ref = transformers.BertModel(cfg).eval()  # with its pooler
    mine = BertEncoder(BertEncoderConfig.from_hf(cfg, add_pooling_layer=True)).eval()
    load_bert_state_dict(mine, ref.state_dict())
    with torch.no_grad():
        out = ref(input_ids=ids)
        h = mine(input_ids=ids)
        close(h, out.last_hidden_state, 1e-5)
        close(mine.pooled(h), out.pooler_output, 1e-5)


def test_the_relative_terms_matter():
    """The test weights are such that dropping the distance embeddings changes the output a lot
    (so the equivalence above is not vacuous)."""
    _, ours = make_models(seed=7)
    x, mask = embedded_batch(200, 32, True, seed=7)
    with torch.no_grad():
        a = ours(inputs_embeds=x, attention_mask=mask)
        for layer in ours.encoder.layer:
            layer.attention.self.distance_embedding.weight.zero_()
        b = ours(inputs_embeds=x, attention_mask=mask)
    assert float((a - b).abs().max()) > 0.1


def test_attention_dropout_only_in_training():
    torch.manual_seed(0)
    m = BertEncoder(BertEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=64,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5))
    x = torch.randn(2, 30, 32)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(inputs_embeds=x), m(inputs_embeds=x))
        m.train()
        assert not torch.allclose(m(inputs_embeds=x), m(inputs_embeds=x))


# ----------------------------------------------------------------------------- the switch

def test_transformers_switch_shares_parameters(monkeypatch):
    ref, ours = make_models(seed=11, layers=1)
    x, mask = embedded_batch(50, 32, True, seed=11)
    monkeypatch.setenv(relattn.ENV_IMPL, "transformers")
    theirs = BertEncoder(ours.config).eval()  # the env var picks the implementation
    assert theirs.impl == "transformers"
    load_bert_state_dict(theirs, ours.state_dict())
    xi = x.clone().requires_grad_()
    out = theirs(inputs_embeds=xi, attention_mask=mask)
    with torch.no_grad():
        close(out, ours(inputs_embeds=x, attention_mask=mask), 1e-5)
    out.sum().backward()  # transformers' modules are ours: gradients land on our parameters
    assert theirs.encoder.layer[0].attention.self.distance_embedding.weight.grad is not None
    monkeypatch.setenv(relattn.ENV_IMPL, "fast")
    with pytest.raises(ValueError, match="SMU_RELATTN"):
        BertEncoder(ours.config)


def test_transformers_5_is_refused_for_relative_configs(monkeypatch):
    import sys
    transformers.BertModel  # noqa: B018 (the lazy package replaces its sys.modules entry when loaded)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "5.25.0")
    cfg = BertEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=64)
    with pytest.raises(TransformersRelativeError, match="no relative positions"):
        relattn.transformers_bert(cfg)
    with pytest.raises(SMUCheckpointError):
        BertEncoder(cfg, impl="transformers")
    BertEncoder(cfg, impl="ours")  # ours needs no transformers
    relattn.transformers_bert(BertEncoderConfig(**{**cfg.to_dict(), "position_embedding_type": "absolute"}))


def test_a_model_without_distance_embeddings_is_refused():
    """What transformers 5 builds for a relative config (no distance_embedding anywhere) is refused
    by the structural check too, whatever version string it reports."""
    cfg = BertEncoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=64)
    absolute = relattn.transformers_bert(BertEncoderConfig(**{**cfg.to_dict(), "position_embedding_type": "absolute"}))
    with pytest.raises(TransformersRelativeError, match="distance_embedding"):
        relattn._check_distance_embeddings(absolute, cfg)


# ----------------------------------------------------------------------------- strict loading

def test_relative_checkpoint_into_an_absolute_model_is_an_error():
    ref, _ = make_models(seed=13, layers=1)
    state = {f"bert.{k}": v for k, v in ref.state_dict().items()}
    state["head.weight"] = torch.zeros(3)  # other modules' keys are left alone
    absolute = BertEncoder(BertEncoderConfig(**{**BertEncoderConfig.from_hf(ref.config).to_dict(),
                                                "position_embedding_type": "absolute"}))
    with pytest.raises(SMUCheckpointError, match="distance_embedding"):
        load_bert_state_dict(absolute, state, prefix="bert.")
    relative = BertEncoder(BertEncoderConfig.from_hf(ref.config))
    load_bert_state_dict(relative, state, prefix="bert.")
    assert torch.equal(relative.encoder.layer[0].attention.self.distance_embedding.weight,
                       ref.encoder.layer[0].attention.self.distance_embedding.weight)


def test_missing_and_misshaped_keys_are_errors():
    ref, ours = make_models(seed=17, layers=1)
    state = ref.state_dict()
    key = "encoder.layer.0.attention.self.distance_embedding.weight"
    with pytest.raises(SMUCheckpointError, match="missing: .*distance_embedding"):
        load_bert_state_dict(ours, {k: v for k, v in state.items() if k != key})
    with pytest.raises(SMUCheckpointError, match="shape mismatch"):
        load_bert_state_dict(ours, {**state, key: state[key][:-2]})
    # old checkpoints carry the position_ids buffer: accepted when canonical, refused otherwise
    load_bert_state_dict(ours, {**state, "embeddings.position_ids": torch.arange(MAX_POS)[None]})
    with pytest.raises(SMUCheckpointError, match="canonical"):
        load_bert_state_dict(ours, {**state, "embeddings.position_ids": torch.arange(MAX_POS)[None].flip(-1)})


def test_too_long_is_refused():
    _, ours = make_models(seed=19, layers=1)
    with pytest.raises(ValueError, match="exceeds"):
        ours(inputs_embeds=torch.zeros(1, MAX_POS + 1, 32))


def test_uses_fewer_flops_than_one_full_product():
    """The blocked bias never builds [L, L, d] and its matmuls are well under 2 x L (2L - 1) d."""
    counted = []
    real_mm, real_bmm = torch.mm, torch.bmm

    def mm(a, b, **kw):
        counted.append(a.shape[0] * a.shape[1] * b.shape[1])
        return real_mm(a, b, **kw)

    def bmm(a, b):
        counted.append(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])
        return real_bmm(a, b)

    q = torch.randn(1, 1, 1000, 8)
    with torch.no_grad():
        torch.mm, torch.bmm = mm, bmm
        try:
            got = relative_position_bias(q, q, torch.randn(2047, 8), 1024)
        finally:
            torch.mm, torch.bmm = real_mm, real_bmm
    assert got.shape == (1, 1, 1000, 1000)
    assert counted and max(counted) < 1000 * 1999 * 8 / 4  # blocks, not one (L, 2L - 1) product
    assert sum(counted) < 0.6 * 2 * 1000 * 1999 * 8  # about half the multiply-adds of two such products


def test_module_names_match_transformers():
    ref, ours = make_models(layers=1)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert isinstance(ours.encoder.layer[0].attention.self.distance_embedding, nn.Embedding)


# ----------------------------------------------------------------------------- MidiBert's option

def _midibert(position: str = "relative_key_query", **kw):
    from smu_explain.model import MidiBert, ModelConfig
    tok = Tokenizer()
    torch.manual_seed(0)
    return MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, position=position, max_len=64, **kw))


def test_midibert_relative_trains_a_step_and_round_trips(tmp_path):
    from smu_explain.checkpoint import load_model, save_checkpoint
    m = _midibert(dropout=0.0)
    assert all(b.attn.distance_embedding.weight.shape == (127, 32) for b in m.blocks)
    tokens = torch.from_numpy(real_tokens(2 * 40)).view(2, 40, -1)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    out = m(tokens, mask, heads=True)
    loss = sum(nn.functional.cross_entropy(lg[mask], tokens[..., j][mask]) for j, lg in enumerate(out["logits"]))
    loss.backward()
    assert all(b.attn.distance_embedding.weight.grad.abs().sum() > 0 for b in m.blocks)
    opt.step()
    m.eval()
    save_checkpoint(tmp_path / "rel", m)
    back = load_model(tmp_path / "rel").eval()
    assert back.config.position == "relative_key_query"
    with torch.no_grad():
        assert torch.equal(back.encode(tokens, mask), m.encode(tokens, mask))
    # the distance tables are part of the checkpoint: a model without them refuses it
    absolute = _midibert("absolute")
    from safetensors.torch import load_file
    with pytest.raises(SMUCheckpointError, match="distance_embedding"):
        load_bert_state_dict(absolute, load_file(tmp_path / "rel" / "model.safetensors"))


def test_midibert_relative_matches_the_reference_and_its_attention_probs(monkeypatch):
    m = _midibert().eval()
    tokens = torch.from_numpy(real_tokens(2 * 50)).view(2, 50, -1)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 35:] = False
    with torch.no_grad():
        ours = m.encode(tokens, mask)
        monkeypatch.setenv(relattn.ENV_IMPL, "transformers")  # transformers' algorithm, same weights
        ref = _midibert().eval()
        ref.load_state_dict(m.state_dict())
        assert ref.blocks[0].attn.rel_impl == "transformers"
        close(ours, ref.encode(tokens, mask), 1e-5)
        # explanations read the same attention the forward pass uses
        blk = m.blocks[0]
        x = m.embed_notes(torch.cat([e(tokens[..., j]) for j, e in enumerate(m.embeddings)], dim=-1))
        am = m._attn_mask(mask, 2, 50)
        w = blk.attention_probs(x, am).float()
        attn = blk.attn
        v = attn.qkv(blk.ln1(x)).view(2, 50, 3, attn.n_heads, -1)[:, :, 2].transpose(1, 2)
        mine = attn.proj((w @ v).transpose(1, 2).reshape(2, 50, -1))
        close(mine, attn(blk.ln1(x), am), 1e-5)


def test_midibert_other_positions_unchanged():
    """rope and absolute models have no distance tables and draw the same initial weights as before."""
    for position in ("rope", "absolute"):
        m = _midibert(position)
        assert not any("distance_embedding" in k for k in m.state_dict())
        assert not any(b.attn.relative for b in m.blocks)
