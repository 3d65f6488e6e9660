"""The Ultra3D ablation: one PartDiT forward and one sampling run, every layer global vs the part schedule.

    .venv/bin/python scripts/bench_part_dit.py --tokens 16384 --parts 8 --json dit.json [--no-sample]

The same weights (a width-256, 8-layer PartDiT by default, random init with the adaLN gates opened
so every layer does its full work) run on the same inputs: N voxel tokens of one shape at the
smallest resolution that holds them, split into P parts of equal size along x (balanced parts, as
Part Attention's cost sum n_p^2 = N^2 / P assumes), once with `--schedule` ("part": every layer
Part Attention) and once with every layer global. Forward times are the median of --repeats
runs after a warm-up; sampling is --steps Euler steps of the rectified flow (partgen.diffusion.flow)
with the diffusers scheduler. Prints a table and writes

    {"tokens": N, "parts": P, "global": {"fwd_ms": x, "sample_ms": x}, "part": {...},
     "speedup_fwd": x, "speedup_sample": x, ...settings}

(sample_ms and speedup_sample are null with --no-sample). `--autocast bf16` runs both under
torch.autocast: the per-token linear layers in bf16 (2.2x the fp32 GEMM rate on these AVX-512-BF16
cores), attention still accumulating in fp32. Timings on shared machines are noisy: the ratio of
one run is the figure to quote.

What caps the ratio on CPU: the part forward is attention (1/8 of global's, at the same rate per
score) plus the per-token layers (qkv, projections, MLP, norms), which both schedules pay in full;
at N=65536, width 256, fp32 those are ~7.4 s of a ~47 s part forward (measured with the attention
calls timed apart), so fp32 tops out near 6.9x however fast the kernel is.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from partgen.diffusion.flow import sample
from partgen.models.part_dit import PartDiT
from partgen.nn.attention import AttentionInputs, select_backend
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths


def make_voxels(tokens: int, parts: int, channels: int, seed: int) -> SparseVoxels:
    """tokens distinct voxels of one shape, parts balanced slabs along x."""
    g = torch.Generator().manual_seed(seed)
    resolution = max(4, math.ceil((2 * tokens) ** (1 / 3)))
    keys = torch.randperm(resolution**3, generator=g)[:tokens].sort().values
    xyz = torch.stack([keys // resolution**2, keys // resolution % resolution, keys % resolution], 1)
    order = torch.argsort(xyz[:, 0], stable=True)
    part = torch.empty(tokens, dtype=torch.int64)
    part[order] = torch.arange(tokens) * parts // tokens
    coords = torch.cat([torch.zeros(tokens, 1, dtype=torch.int64), xyz], 1).to(torch.int32)
    feats = torch.randn(tokens, channels, generator=g)
    return SparseVoxels(feats, cu_seqlens_from_lengths([tokens]), coords, resolution, part).validate()


def open_gates(model: PartDiT, seed: int) -> None:
    """adaLN-Zero starts every residual branch at 0 (a trained model does not): give the gates weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.abs().sum():
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.02)


def _backend(x: SparseVoxels, heads: int, width: int, scope: str) -> str:
    """The attention backend partgen picks for this input's self-attention of one scope."""
    from partgen.structures import groups_from_cu_seqlens

    groups = x.part_groups() if scope == "part" else groups_from_cu_seqlens(x.cu_seqlens)
    probe = torch.zeros(len(x.feats), heads, width // heads)
    return select_backend(AttentionInputs(probe, probe, probe, groups, groups, (width // heads) ** -0.5)).name


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (kernel builds, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--schedule", default="part", help="the configured schedule: part | alternate | comma list")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="sampling steps")
    ap.add_argument("--no-sample", action="store_true")
    ap.add_argument("--backend", default=None, help="attention backend (default: auto)")
    ap.add_argument(
        "--autocast",
        choices=("none", "bf16"),
        default="none",
        help="bf16: run both under torch.autocast (linear layers in bf16; attention accumulates in fp32)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tokens < args.parts or args.parts < 1:
        print("bench_part_dit: need tokens >= parts >= 1", file=sys.stderr)
        return 1
    schedule = args.schedule.split(",") if "," in args.schedule else args.schedule
    torch.manual_seed(args.seed)
    model = PartDiT(args.channels, args.width, args.depth, args.heads, schedule=schedule).eval().requires_grad_(False)
    open_gates(model, args.seed)
    x = make_voxels(args.tokens, args.parts, args.channels, args.seed)
    if args.backend:
        import os

        os.environ["PARTGEN_ATTENTION_BACKEND"] = args.backend
    t = torch.tensor([0.5])
    results = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
        for name, scopes in (("global", "global"), ("part", None)):
            fwd = median_ms(lambda scopes=scopes: model(x, t, schedule=scopes), args.repeats)
            row = {"fwd_ms": round(fwd, 2), "sample_ms": None}
            if not args.no_sample:

                def velocity(feats, time_, scopes=scopes):
                    return model(x.replace(feats=feats), time_, schedule=scopes)

                noise = torch.randn(x.feats.shape, generator=torch.Generator().manual_seed(args.seed))
                start = time.perf_counter()
                sample(velocity, noise, steps=args.steps)
                row["sample_ms"] = round((time.perf_counter() - start) * 1000, 2)
            results[name] = row
            print(f"{name:>6}: forward {row['fwd_ms']:.1f} ms, sampling {row['sample_ms']} ms", file=sys.stderr)
    out = {
        "tokens": args.tokens,
        "parts": args.parts,
        "global": results["global"],
        "part": results["part"],
        "speedup_fwd": round(results["global"]["fwd_ms"] / results["part"]["fwd_ms"], 3),
        "speedup_sample": None
        if args.no_sample
        else round(results["global"]["sample_ms"] / results["part"]["sample_ms"], 3),
        "schedule": model.schedule,
        "width": args.width,
        "depth": args.depth,
        "heads": args.heads,
        "steps": None if args.no_sample else args.steps,
        "threads": torch.get_num_threads(),
        "autocast": args.autocast,
        "attention_backend": {
            name: _backend(x, args.heads, args.width, scope) for name, scope in (("part", "part"), ("global", "global"))
        },
        "ideal_attention_speedup": round(args.tokens**2 / sum(n * n for n in x.part.bincount().tolist()), 3),
    }
    print(
        f"PartDiT width {args.width} x {args.depth} layers, N={args.tokens}, P={args.parts}: forward speed-up "
        f"{out['speedup_fwd']:.2f}x, sampling {out['speedup_sample']}x (attention alone ideal "
        f"{out['ideal_attention_speedup']:.1f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
