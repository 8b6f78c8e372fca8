"""Training-step speed of smu_explain's MidiBert (random and adversarial masking)
against a peer built on Hugging Face transformers' BertModel. Prints one JSON object.

Default (CPU): small model (4 x 256), seq 512, batch 8, 2 torch threads, fp32 and
bf16 autocast. GPU: ``--device cuda --size base --dtype bf16 --batch 16``.

What one "step" is, for every variant: build the masked batch (strategy.loss),
forward, backward, gradient clip 3.0, AdamW step, zero_grad. Tokens/s counts all
B x L tokens of the batch (no padding in the synthetic batch).

FLOPs/step (model FLOPs, the same count for every variant so rates compare):
6 x N x tokens + 12 x layers x seq_len x width x tokens, with N = non-embedding
parameters of the recoverer (blocks, input projection, final norm, output heads;
embedding tables and the masker head left out). The adversarial step does more
work than this (a clean forward pass, the masker head); its rate is therefore
"useful" model FLOP/s.

Peak: a large square matmul (``--peak-n``, default 2048) timed in the same run, in
every round, in fp32 (and bf16 when bf16 numbers are asked for); the best time counts.

The measurements are interleaved: each round times ``--steps`` steps of every
variant in turn, after ``--warmup`` steps each. ``step_s`` is the best round (the
machine is shared: other processes only add time), ``step_s_median`` the median;
ratios, rates and targets use ``step_s``. The load average before/after is reported.
"""

from __future__ import annotations

import os
import sys

# bench/ holds a tokenize.py that would shadow the standard library's (imported by torch):
# drop this script's folder from the import path before importing anything else.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from smu_explain.masker import make_strategy  # noqa: E402
from smu_explain.model import MidiBert, ModelConfig  # noqa: E402
from smu_explain.names import SIZES  # noqa: E402

ATTRS = ["bar", "position", "pitch", "duration"]
FALLBACK_VOCAB = [34, 34, 88, 66]


def vocab_sizes() -> list[int]:
    try:  # the real tokenizer's sizes when it exists
        from smu_explain.tokenizer import Tokenizer
        from smu_explain.tokenizer_config import TokenizerConfig
        tok = Tokenizer(TokenizerConfig())
        if list(tok.attributes) == ATTRS:
            return list(tok.vocab_sizes)
    except Exception:
        pass
    return FALLBACK_VOCAB


class HFPeer(nn.Module):
    """The same per-attribute embeddings, projection and heads as MidiBert, around a
    transformers BertModel (post-LN, separate q/k/v, SDPA attention), called with
    inputs_embeds. Exposes MidiBert's forward() contract so the same strategy code runs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from transformers import BertConfig, BertModel
        self.config = cfg
        self.embeddings = nn.ModuleList(nn.Embedding(v, cfg.emb_dim) for v in cfg.vocab_sizes)
        self.in_proj = nn.Linear(cfg.emb_dim * len(cfg.vocab_sizes), cfg.d_model)
        bc = BertConfig(vocab_size=8, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                        num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
                        max_position_embeddings=cfg.max_len, type_vocab_size=1,
                        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                        attn_implementation="sdpa")
        self.bert = BertModel(bc, add_pooling_layer=False)
        assert self.bert.config._attn_implementation == "sdpa", self.bert.config._attn_implementation
        self.out_heads = nn.ModuleList(nn.Linear(cfg.d_model, v) for v in cfg.vocab_sizes)

    def forward(self, tokens, attention_mask=None, *, heads_at=None, heads=False, masker=False,
                only_heads_at=False):
        x = torch.cat([e(tokens[..., j]) for j, e in enumerate(self.embeddings)], dim=-1)
        hidden = self.bert(inputs_embeds=self.in_proj(x), attention_mask=attention_mask).last_hidden_state
        # only_heads_at (MidiBert runs its last block at those rows only): BertModel has no such pass,
        # so the peer computes every row and returns those (same contract, its full cost)
        out = {"hidden": hidden[heads_at] if only_heads_at else hidden}
        if heads_at is not None:
            out["logits"] = [h(hidden[heads_at]) for h in self.out_heads]
        return out


def model_flops_per_step(model: MidiBert, batch: int, seq: int) -> float:
    c = model.config
    n = model.num_parameters(non_embedding=True) - sum(p.numel() for p in model.masker_head.parameters())
    tokens = batch * seq
    return 6.0 * n * tokens + 12.0 * c.n_layers * seq * c.d_model * tokens


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best-of-reps FLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


class Variant:
    def __init__(self, name, model, strategy, opt, batch, device, dtype):
        self.name, self.model, self.strategy, self.opt = name, model, strategy, opt
        self.batch, self.device, self.dtype = batch, device, dtype
        self.times: list[float] = []

    def step(self) -> None:
        ctx = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
               if self.dtype == "bf16" else nullcontext())
        with ctx:
            loss, _ = self.strategy.loss(self.model, self.batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 3.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def run(self, n: int, record: bool) -> None:
        sync(self.device)
        t = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        if record:
            self.times.append((time.perf_counter() - t) / n)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", default="small", choices=SIZES)
    p.add_argument("--dtype", default="both", choices=["fp32", "bf16", "both"],
                   help="fp32, bf16 autocast, or both (default on CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 2048 CPU, 8192 GPU)")
    p.add_argument("--no-peer", action="store_true", help="skip the transformers BertModel peer")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--variants", default="", help="comma list to restrict (e.g. random,adv_head)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.peak_n is None:
        args.peak_n = 2048 if device.type == "cpu" else 8192
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.manual_seed(0)
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]

    vs = vocab_sizes()
    cfg = ModelConfig.named(args.size, vs, ATTRS, max_len=max(args.seq, 512), dropout=args.dropout)
    model = MidiBert(cfg).to(device).train()
    tokens = torch.stack([torch.randint(2, v, (args.batch, args.seq)) for v in vs], dim=-1).to(device)
    batch = {"tokens": tokens, "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.bool, device=device)}

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    strategies = {
        "random": make_strategy("random"),
        "adv_head": make_strategy("adversarial", masker_grad="head", freeze=False),
        "adv_full": make_strategy("adversarial", masker_grad="full", freeze=False),
    }
    variants: list[Variant] = []
    for dt in dtypes:
        for key, strat in strategies.items():
            variants.append(Variant(f"{key}_{dt}", model, strat, opt, batch, device, dt))
    if not args.no_peer:
        peer = HFPeer(cfg).to(device).train()
        peer_opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, weight_decay=0.01)
        for dt in dtypes:
            variants.append(Variant(f"hf_bert_random_{dt}", peer, make_strategy("random"), peer_opt, batch,
                                    device, dt))
    if args.variants:
        keep = set(args.variants.split(","))
        variants = [v for v in variants if any(v.name.startswith(k) for k in keep)]

    load_before = os.getloadavg()
    peak_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {k: 0.0 for k in (["fp32"] + (["bf16"] if "bf16" in dtypes else []))}

    def measure_peaks(reps: int) -> None:  # best over the whole run, like the steps
        for k in peaks:
            peaks[k] = max(peaks[k], matmul_peak(device, peak_dtypes[k], args.peak_n, reps))

    measure_peaks(3)
    for v in variants:
        v.run(args.warmup, record=False)
    for _ in range(args.rounds):  # interleaved: every variant and the matmul peak in each round
        for v in variants:
            v.run(args.steps, record=True)
        measure_peaks(2)
    load_after = os.getloadavg()

    flops = model_flops_per_step(model, args.batch, args.seq)
    tokens_per_step = args.batch * args.seq
    res: dict = {
        "config": {"device": str(device), "size": args.size, "batch": args.batch, "seq": args.seq,
                   "threads": torch.get_num_threads() if device.type == "cpu" else None,
                   "dropout": args.dropout, "vocab_sizes": vs, "steps_per_round": args.steps,
                   "rounds": args.rounds, "warmup": args.warmup,
                   "params": model.num_parameters(), "flops_per_step": flops,
                   "torch": torch.__version__, "python": platform.python_version(),
                   "cpu": platform.processor() or platform.machine()},
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "variants": {},
    }
    if device.type == "cuda":
        res["config"]["gpu"] = torch.cuda.get_device_name(device)
    for v in variants:
        # best round: other processes sharing the CPU only ever add time (median kept for reference)
        t = min(v.times)
        dt = v.name.rsplit("_", 1)[1]
        peak = peaks[dt]
        res["variants"][v.name] = {
            "step_s": round(t, 4), "step_s_median": round(statistics.median(v.times), 4),
            "step_s_all": [round(x, 4) for x in v.times],
            "tokens_per_s": round(tokens_per_step / t, 1),
            "model_gflops": round(flops / t / 1e9, 2),
            "mfu_vs_measured_peak": round(flops / t / peak, 3),
        }
    r = res["variants"]
    summary = {}
    for dt in dtypes:
        if f"random_{dt}" not in r:
            continue
        base = r[f"random_{dt}"]["step_s"]
        for k in ("adv_head", "adv_full"):
            if f"{k}_{dt}" in r:
                summary[f"{k}_over_random_{dt}"] = round(r[f"{k}_{dt}"]["step_s"] / base, 3)
        if f"hf_bert_random_{dt}" in r:
            summary[f"speedup_vs_hf_bert_{dt}"] = round(r[f"hf_bert_random_{dt}"]["step_s"] / base, 3)
        summary[f"mfu_random_{dt}"] = r[f"random_{dt}"]["mfu_vs_measured_peak"]
    targets = {}
    if "speedup_vs_hf_bert_fp32" in summary:
        targets["random_vs_hf_bert_fp32_ge_1.3x"] = summary["speedup_vs_hf_bert_fp32"] >= 1.3
    if "adv_head_over_random_fp32" in summary:
        targets["adv_head_le_1.5x_random_fp32"] = summary["adv_head_over_random_fp32"] <= 1.5
    if "mfu_random_fp32" in summary:
        targets["random_fp32_ge_45pct_of_matmul_peak"] = summary["mfu_random_fp32"] >= 0.45
    if device.type == "cuda" and "mfu_random_bf16" in summary:
        res["note"] = "GPU: mfu_vs_measured_peak is the model-FLOP utilisation against the measured bf16 matmul peak"
    res["summary"] = summary
    res["targets_met"] = targets
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
