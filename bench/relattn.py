#!/usr/bin/env python
"""Relative-position attention benchmark (issue 26); prints one JSON object and adds it to
docs/benchmarks/relattn.json under its own key (``run_<UTC time>``; the file's other keys, the record
of earlier runs and experiments, are kept; a file that is not JSON is left alone and nothing is written).

The published configuration (12 layers x 768, 12 heads, intermediate 3072,
max_position_embeddings 1024), on ``inputs_embeds`` like MidiBERT, three encoders:

- ``ours``: ``smu_explain.relattn.BertEncoder``, ``relative_key_query``;
- ``transformers_relative``: transformers 4.x's eager ``BertModel``, ``relative_key_query``,
  the same weights (its output is compared with ours: ``max_abs_diff``);
- ``transformers_absolute``: transformers' ``BertModel`` with absolute positions (its SDPA path),
  the speed of the matmuls that matter.

1. ``eval_forward``: one 1,000-token sequence, eval mode, no grad, fp32 and bf16 autocast (bf16
   only where the CPU has native bf16: ``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo; else
   recorded as skipped). The variants are interleaved in each repeat; the median is reported,
   and the ratios of the medians (the machine is shared: absolute times are noisy, ratios less).
2. ``train_step``: forward + backward (sum of the output as the loss), sequence 512, batch 8, fp32,
   train mode (dropout on), interleaved likewise (after a warm-up step; transformers' relative
   path, about 2 minutes a step here, runs once, in the first repeat).
3. ``peak_rss_mb``: peak resident memory of a fresh subprocess per variant and workload: build the
   model, reset the kernel's peak mark (``/proc/self/clear_refs``), run the workload once, read
   ``VmHWM`` (``peak_rss_mb``, model included) and what the workload added (``workload_mb``).
4. ``explain_1000_notes``: the explanation of a 1,000-note piece by a 12 x 768 model: one per-note
   (masker / loss) pass plus one recovery pass per mask group at 15 % masking, 1 + ceil(1/0.15) = 8
   forward passes of 1,000 tokens with ours, bf16 where available (embeddings and heads are
   negligible next to the encoder), run for real, plus the top operators of one pass
   (``torch.profiler``): what dominates.

Targets (issue 26): ours <= 1.3 x absolute, >= 5 x faster than transformers' relative path,
peak memory <= absolute + 10 %, the explanation <= 20 s.

Usage: ``python bench/relattn.py [--repeats 3] [--train-repeats 2] [--layers 12] [--no-peak]
[--no-write] [--no-train] [--no-explain] [--skip-transformers-relative-train]``
"""

from __future__ import annotations

import os
import sys

# bench/ holds a tokenize.py that would shadow the standard library's module: drop this folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(_HERE).parent
OUT = ROOT / "docs" / "benchmarks" / "relattn.json"
VARIANTS = ("ours", "transformers_relative", "transformers_absolute")


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16 on this CPU, why)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False, "no /proc/cpuinfo"
    have = sorted(f for f in ("avx512_bf16", "amx_bf16") if f in flags)
    return (bool(have), "cpu flags: " + (", ".join(have) if have else "no avx512_bf16 / amx_bf16"))


def config_kwargs(layers: int) -> dict:
    return dict(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072,
                max_position_embeddings=1024, vocab_size=2)


def build(variant: str, layers: int, seed: int = 0):
    """The encoder of ``variant``: a callable (inputs_embeds) -> last hidden state, and the module."""
    import torch
    import transformers

    from smu_explain.relattn import BertEncoder, BertEncoderConfig, load_bert_state_dict

    torch.manual_seed(seed)
    kw = config_kwargs(layers)
    if variant == "transformers_absolute":
        m = transformers.BertModel(transformers.BertConfig(**kw, position_embedding_type="absolute",
                                                           attn_implementation="sdpa"), add_pooling_layer=False)
        return (lambda x: m(inputs_embeds=x).last_hidden_state), m
    ref = transformers.BertModel(transformers.BertConfig(**kw, position_embedding_type="relative_key_query",
                                                         attn_implementation="eager"), add_pooling_layer=False)
    with torch.no_grad():  # distance embeddings of a trained model's size, so the check below means something
        for layer in ref.encoder.layer:
            layer.attention.self.distance_embedding.weight.normal_(0.0, 0.5)
    if variant == "transformers_relative":
        return (lambda x: ref(inputs_embeds=x).last_hidden_state), ref
    ours = BertEncoder(BertEncoderConfig(**kw, position_embedding_type="relative_key_query"), impl="ours")
    load_bert_state_dict(ours, ref.state_dict())
    return (lambda x: ours(inputs_embeds=x)), ours


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(times: dict[str, list[float]]) -> dict:
    med = {v: statistics.median(t) for v, t in times.items()}
    out = {v: {"median_s": round(med[v], 3), "runs_s": [round(t, 3) for t in times[v]]} for v in times}
    a = med.get("transformers_absolute")
    r = med.get("transformers_relative")
    o = med["ours"]
    out["ratios"] = {
        "ours_over_absolute": round(o / a, 3) if a else None,
        "transformers_relative_over_ours": round(r / o, 2) if r else None,
    }
    out["targets_met"] = {
        "ours_le_1.3x_absolute": (o / a <= 1.3) if a else None,
        "ours_ge_5x_faster_than_transformers_relative": (r / o >= 5) if r else None,
    }
    return out


def eval_forward(models, repeats: int, bf16: bool) -> dict:
    import torch
    x = torch.randn(1, 1000, 768, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {v: [] for v in models}
    outs = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for v, (fn, _) in models.items():  # warm-up (and the outputs for the check)
            outs[v] = fn(x).float()
        for _ in range(repeats):
            for v, (fn, _) in models.items():
                times[v].append(timed(lambda fn=fn: fn(x)))
    res = summary(times)
    if "transformers_relative" in outs:
        res["max_abs_diff_ours_vs_transformers_relative"] = float(
            (outs["ours"] - outs["transformers_relative"]).abs().max())
    return res


def train_step(models, repeats: int, rel_repeats: int = 1) -> dict:
    import torch
    x = torch.randn(8, 512, 768, generator=torch.Generator().manual_seed(2))
    times: dict[str, list[float]] = {v: [] for v in models}

    def step(fn, m):
        m.zero_grad(set_to_none=True)
        fn(x).sum().backward()

    for v, (fn, m) in models.items():
        m.train()
        if v != "transformers_relative":  # warm-up (the slow reference runs once, below)
            step(fn, m)
    for r in range(repeats):
        for v, (fn, m) in models.items():
            if v == "transformers_relative" and r >= rel_repeats:
                continue
            times[v].append(timed(lambda fn=fn, m=m: step(fn, m)))
    for _v, (_fn, m) in models.items():
        m.eval()
        m.zero_grad(set_to_none=True)
    return summary(times)


def explain_1000(models, bf16: bool) -> dict:
    import torch
    from torch.profiler import profile
    fn, _ = models["ours"]
    passes = 1 + math.ceil(1 / 0.15)
    x = torch.randn(1, 1000, 768, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fn(x)
        t = timed(lambda: [fn(x) for _ in range(passes)])
        with profile() as prof:
            fn(x)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    top = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in ops[:8]]
    return {"passes": passes, "precision": "bf16 autocast" if bf16 else "fp32", "seconds": round(t, 2),
            "target_s": 20.0, "target_met": t <= 20.0, "top_ops_of_one_pass": top}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(variant: str, workload: str, layers: int) -> dict:
    """Run in a fresh process: build the model (random weights: memory does not depend on them),
    reset the peak-RSS mark (``/proc/self/clear_refs``), run the workload once; MB. (``ru_maxrss``
    would not do: Linux carries the parent's peak into a forked-and-exec'd child.)"""
    import gc

    import torch
    import transformers

    from smu_explain.relattn import BertEncoder, BertEncoderConfig

    kw = config_kwargs(layers)
    if variant == "ours":
        m = BertEncoder(BertEncoderConfig(**kw, position_embedding_type="relative_key_query"))
        fn = (lambda x: m(inputs_embeds=x))
    else:
        kind = "absolute" if variant == "transformers_absolute" else "relative_key_query"
        m = transformers.BertModel(transformers.BertConfig(
            **kw, position_embedding_type=kind, attn_implementation="sdpa" if kind == "absolute" else "eager"),
            add_pooling_layer=False)
        fn = (lambda x: m(inputs_embeds=x).last_hidden_state)
    x = torch.randn(8, 512, 768) if workload == "train" else torch.randn(1, 1000, 768)
    gc.collect()
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark restarts from the current RSS
    if workload == "train":
        m.train()
        fn(x).sum().backward()
    else:
        m.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=workload == "eval_bf16"):
            fn(x)
    peak = _status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1), "workload_mb": round(peak - before, 1)}


def peak_memory(layers: int, workloads: list[str], skip: set[tuple[str, str]]) -> dict:
    out: dict = {}
    for w in workloads:
        out[w] = {}
        for v in VARIANTS:
            if (v, w) in skip:
                out[w][v] = None
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--peak-child", v, w, "--layers", str(layers)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if r.returncode:
                out[w][v] = {"error": r.stderr.strip().splitlines()[-1:]}
                continue
            out[w][v] = json.loads(r.stdout.strip().splitlines()[-1])
        o, a = out[w].get("ours"), out[w].get("transformers_absolute")
        if o and a and "peak_rss_mb" in o and "peak_rss_mb" in a:
            out[w]["ours_over_absolute_peak"] = round(o["peak_rss_mb"] / a["peak_rss_mb"], 3)
            out[w]["target_met_le_absolute_plus_10pct"] = o["peak_rss_mb"] <= 1.1 * a["peak_rss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-repeats", type=int, default=2)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--no-peak", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-explain", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="skip the training step (a quick look at inference)")
    ap.add_argument("--skip-transformers-relative-train", action="store_true")
    ap.add_argument("--peak-child", nargs=2, metavar=("VARIANT", "WORKLOAD"))
    args = ap.parse_args()
    if args.peak_child:
        print(json.dumps(peak_child(*args.peak_child, layers=args.layers)))
        return

    import torch
    import transformers
    if int(transformers.__version__.split(".")[0]) >= 5:
        sys.exit(f"transformers {transformers.__version__} has no relative positions: the reference needs "
                 "transformers>=4.57,<5")
    bf16, bf16_why = cpu_bf16()
    started = time.time()
    result: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16": bf16, "bf16_why": bf16_why,
                    "loadavg_start": os.getloadavg()},
        "config": {**config_kwargs(args.layers), "position_embedding_type": "relative_key_query",
                   "note": "vocab_size=2: MidiBERT feeds inputs_embeds, the word table is unused"},
        "notes": "shared 2-core machine: variants interleaved per repeat, medians; compare ratios, not seconds",
    }
    models = {v: build(v, args.layers) for v in VARIANTS}
    for _, m in models.values():
        m.eval()
    result["eval_forward_1000"] = {"fp32": eval_forward(models, args.repeats, False)}
    result["eval_forward_1000"]["bf16"] = (eval_forward(models, args.repeats, True) if bf16
                                           else {"skipped": bf16_why})
    train_models = dict(models)
    if args.skip_transformers_relative_train:
        train_models.pop("transformers_relative")
    if not args.no_train:
        result["train_step_512x8_fp32"] = train_step(train_models, args.train_repeats)
    if not args.no_explain:
        result["explain_1000_notes"] = explain_1000(models, bf16)
    del models, train_models
    if not args.no_peak:
        workloads = ["eval_fp32"] + ([] if args.no_train else ["train"]) + (["eval_bf16"] if bf16 else [])
        skip = {("transformers_relative", "train")} if args.skip_transformers_relative_train else set()
        result["peak_rss_mb"] = peak_memory(args.layers, workloads, skip)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["wall_s"] = round(time.time() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if not args.no_write:
        from smu_explain.io import atomic_write_text

        try:
            record = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {}
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            sys.exit(f"{OUT} is not the JSON object this benchmark adds to ({e}); nothing written")
        record["run_" + time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(started))] = result
        OUT.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
