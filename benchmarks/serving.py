"""The serving step on meta at scale: a 7B and a 70B Llama-shaped decoder, side by side.

    python benchmarks/serving.py                 # both, context 8192, batch 8, float16, int4 weights (g128)
    python benchmarks/serving.py --fits 80GiB    # ... and the longest context that fits 80 GiB

Each case runs in a fresh interpreter (so that its peak RSS, VmHWM, is its own): build the model on
meta, then ``profile(..., device="meta", dtype="float16", serve=...)`` twice (cold, warm), and a bare
meta prefill and decode step of the same model for scale. Every figure is checked against its
hand derivation (printed beside it):

- KV cache: 2 (keys, values) * layers * kv_heads * head_dim * context * batch * 2 bytes;
- decode MACs: batch * (layers * (d * (d + 2 * kv_heads * head_dim + d) + 3 * d * ff
  + 2 * heads * head_dim * (context + 1)) + d * vocab);
- prefill MACs: batch * context * (layers * (d * (2 * d + 2 * kv_heads * head_dim) + 3 * d * ff)
  + d * vocab) + layers * 2 * batch * heads * head_dim * context**2 (full score matrix, as counted);
- int4 weights, groups of 128 along each row with a 16-bit scale and zero: every matrix
  (embedding, projections, MLP, LM head) at 4.25 bits, the norms and the rotary embedding's two
  buffers (head_dim / 2 each) at 2 bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

CASES = {
    # Llama-2-7B shape (multi-head attention), as benchmarks/models.py builds it
    "7B": {"layers": 32, "d": 4096, "heads": 32, "kv_heads": 32, "ff": 11008, "vocab": 32000},
    # Llama-3-70B shape: grouped-query attention, 8 key-value heads
    "70B": {"layers": 80, "d": 8192, "heads": 64, "kv_heads": 8, "ff": 28672, "vocab": 128256},
}
MIB = 2**20


def hand(case: dict[str, int], context: int, batch: int) -> dict[str, int]:
    """The figures derived by hand (see the module's docstring)."""
    layers, d, heads, kv, ff, vocab = (case[key] for key in ("layers", "d", "heads", "kv_heads", "ff", "vocab"))
    head = d // heads
    matrices = [(vocab, d), (vocab, d)] + [
        (d, d),
        (kv * head, d),
        (kv * head, d),
        (d, d),
        (ff, d),
        (ff, d),
        (d, ff),
    ] * layers
    quantized = sum(rows * cols // 2 + rows * (cols // 128) * 4 for rows, cols in matrices)
    return {
        "kv_bytes": 2 * layers * kv * head * context * batch * 2,
        "decode_macs": batch
        * (layers * (d * (d + 2 * kv * head + d) + 3 * d * ff + 2 * heads * head * (context + 1)) + d * vocab),
        "prefill_macs": batch * context * (layers * (d * (2 * d + 2 * kv * head) + 3 * d * ff) + d * vocab)
        + layers * 2 * batch * heads * head * context**2,
        "weights_bytes": quantized + (2 * layers + 1) * d * 2 + 2 * (head // 2) * 2,
    }


def child(name: str, context: int, batch: int, fits: str | None) -> None:
    warnings.simplefilter("ignore")
    import torch
    import transformers

    from pytest_netbudget import ServeSpec, profile

    case = CASES[name]
    config = transformers.LlamaConfig(
        hidden_size=case["d"],
        num_hidden_layers=case["layers"],
        num_attention_heads=case["heads"],
        num_key_value_heads=case["kv_heads"],
        intermediate_size=case["ff"],
        vocab_size=case["vocab"],
        max_position_embeddings=context,
    )
    start = time.perf_counter()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).half().eval()
    report: dict[str, Any] = {"build_s": time.perf_counter() - start, "hwm_before_kib": _kib("VmHWM")}
    ids = torch.zeros(1, 128, dtype=torch.long, device="meta")
    spec = ServeSpec(context=context, batch=batch, weights="int4", group_size=128, fits=fits)
    for run in ("cold", "warm"):
        start = time.perf_counter()
        p = profile(model, ids, device="meta", dtype="float16", serve=spec)
        report[f"{run}_s"] = time.perf_counter() - start
    prompt = torch.zeros(batch, context, dtype=torch.long, device="meta")
    start = time.perf_counter()
    with torch.no_grad():
        cache = model(prompt, use_cache=True).cache
        model(prompt[:, -1:], cache=cache, use_cache=True)
    report["bare_s"] = time.perf_counter() - start
    report["hwm_kib"] = _kib("VmHWM")
    report["figures"] = {
        "kv_bytes": round(p.kv_cache_mb * MIB),
        "decode_macs": p.decode_macs,
        "prefill_macs": p.prefill_macs,
        "weights_bytes": round(p.weights_mb * MIB),
        "memory_mb": {str(part): figure for part, figure in p.serve.memory_mb.items()},
        "serve_memory_mb": p.serve_memory_mb,
        "fits": p.serve.fits.to_dict() if p.serve.fits is not None else None,
    }
    print("CHILD-JSON " + json.dumps(report))


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run(name: str, context: int, batch: int, fits: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--context", str(context), "--batch", str(batch)]
    done = subprocess.run(command + (["--fits", fits] if fits else []), capture_output=True, text=True, timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("CHILD-JSON "):
            return json.loads(line[len("CHILD-JSON ") :])
    raise SystemExit(f"{name}: the child failed: {done.stderr.strip().splitlines()[-1:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fits", default=None, help="also find the longest context that fits this memory")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.context, args.batch, args.fits)
        return
    print(f"Serving step on meta, context {args.context:,}, batch {args.batch}, float16, int4 weights (group 128)")
    print("each case in a fresh interpreter; '=' means equal to the hand-derived figure\n")
    for name in CASES:
        report = run(name, args.context, args.batch, args.fits)
        figures, expected = report["figures"], hand(CASES[name], args.context, args.batch)
        check = {key: "=" if figures[key] == expected[key] else f"!= {expected[key]:,}" for key in expected}
        print(
            f"{name}: profile cold {report['cold_s']:.2f} s, warm {report['warm_s']:.2f} s "
            f"(a bare meta prefill + decode step: {report['bare_s']:.2f} s); "
            f"peak RSS {report['hwm_kib'] / 1024:.0f} MiB (after building: {report['hwm_before_kib'] / 1024:.0f} MiB)"
        )
        print(
            f"  kv cache      {figures['kv_bytes'] / 2**30:.3f} GiB ({figures['kv_bytes']:,} bytes) {check['kv_bytes']}"
        )
        print(f"  decode MACs   {figures['decode_macs']:,} {check['decode_macs']}")
        print(f"  prefill MACs  {figures['prefill_macs']:,} {check['prefill_macs']}")
        print(
            f"  weights int4  {figures['weights_bytes'] / 2**30:.3f} GiB ({figures['weights_bytes']:,} bytes) {check['weights_bytes']}"
        )
        parts = ", ".join(f"{part} {mb / 1024:.3f}" for part, mb in figures["memory_mb"].items())
        print(f"  serve memory  {figures['serve_memory_mb'] / 1024:.3f} GiB = {parts}")
        if figures["fits"] is not None:
            fit = figures["fits"]
            print(f"  fits {args.fits}: {fit['context']} tokens of context (+{fit['per_token_mb']:.3f} MiB a token)")
        print()


if __name__ == "__main__":
    main()
