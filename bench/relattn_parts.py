#!/usr/bin/env python
"""Where one relative_key_query attention call's time goes (issue 26), against the 1.3x target; prints JSON.

One attention of the published configuration (1 x 12 heads x 1,000 tokens x 64, fp32, eval, no grad), each
part timed on its own (median of ``--repeats``), in one process:

- ``sdpa``: ``scaled_dot_product_attention`` without a mask (what the absolute model's attention costs);
- ``sdpa_with_bias``: the same with a (1, 12, L, L) float bias (what reading any bias costs SDPA);
- ``relative_gemms``: the two terms' block products (``relattn._relative_bias``'s GEMMs: q and k of 128
  rows at a time against the run of L + 127 distance rows they see), the FLOPs any exact method needs
  short of a fused kernel;
- ``key_columns`` / ``query_rows``: writing the key term's strided columns into the bias and adding the
  query term's strided rows (the bias assembly; the key term's columns are a transpose);
- ``ours``: ``relattn.relative_attention``, all of it.

``floor_ms`` = relative GEMMs + the bias's cost to SDPA: what ours would take above ``sdpa`` with a free
assembly. ``budget_ms``: what 1.3x the absolute model allows above it per layer, from ``--absolute-layer-ms``
(the absolute model's whole layer; default 62 ms: 0.747 s / 12 layers measured by bench/relattn.py in the
same session).

Usage: ``python bench/relattn_parts.py [--repeats 9] [--absolute-layer-ms 62]``
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/tokenize.py shadows the stdlib

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(_HERE))
from smu_explain import relattn as R  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--absolute-layer-ms", type=float, default=62.0)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    B, H, L, d, M, b = 1, 12, 1000, 64, 1024, R.REL_BLOCK
    q, k, v = (torch.randn(B, H, L, d) for _ in range(3))
    table = torch.randn(2 * M - 1, d) * 0.1
    t_key = table.clone()
    t_query = t_key.flip(0).contiguous()
    sizes = [(s, min(b, L - s)) for s in range(0, L, b)]
    scratch = torch.empty(B * H * b * (L + b - 1))
    bias = torch.empty(B, H, L, L)

    def product(x, t, s, n):
        W = L + n - 1
        return torch.mm(x[..., s: s + n, :].reshape(-1, d), t[M - s - n: M - s + L - 1].t(),
                        out=scratch[: B * H * n * W].view(-1, W)).view(B, H, n, W)

    def gemms():
        for s, n in sizes:
            product(k, t_key, s, n)
        for s, n in sizes:
            product(q, t_query, s, n)

    def key_columns():
        for s, n in sizes:
            y = scratch[: B * H * n * (L + n - 1)].view(B, H, n, L + n - 1)
            bias[..., s: s + n] = R._strided(y, (L, n), (1, L + n - 2), n - 1)

    def query_rows():
        for s, n in sizes:
            y = scratch[: B * H * n * (L + n - 1)].view(B, H, n, L + n - 1)
            bias[..., s: s + n, :].add_(R._strided(y, (n, L), (L + n - 2, 1), n - 1))

    with torch.no_grad():
        ms = {"sdpa": median_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats),
              "sdpa_with_bias": median_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                                          args.repeats),
              "relative_gemms": median_ms(gemms, args.repeats),
              "key_columns": median_ms(key_columns, args.repeats),
              "query_rows": median_ms(query_rows, args.repeats),
              "ours": median_ms(lambda: R.relative_attention(q, k, v, table, M), args.repeats)}
    floor = round(ms["relative_gemms"] + ms["sdpa_with_bias"] - ms["sdpa"], 2)
    budget = round(0.3 * args.absolute_layer_ms, 2)
    out = {"shape": [B, H, L, d], "dtype": "float32", "threads": torch.get_num_threads(),
           "loadavg": list(os.getloadavg()), "median_ms": ms,
           "ours_above_sdpa_ms": round(ms["ours"] - ms["sdpa"], 2),
           "floor_above_sdpa_ms": floor, "budget_above_absolute_layer_ms": budget,
           "absolute_layer_ms": args.absolute_layer_ms,
           "floor_share_of_budget": round(floor / budget, 2)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
