"""Benchmark part attention: every available backend on the same inputs, against full attention.

    python scripts/bench_part_attention.py --tokens 16384 --parts 8 --dist balanced \
        --heads 8 --head-dim 64 --backward --json bench.json

Each backend runs in its own fresh process (so its peak memory is its own); timings are the
median of --repeats runs. The run also measures full SDPA over all N tokens (what a model
without Part Attention pays), the ideal ratio N^2 / sum(n_i^2), and the machine's fp32 matmul
GFLOP/s. FLOPs: forward 4*H*D*sum(n_i^2); forward+backward 3.5x that (backward = 2.5 forwards).
Timings on shared machines are noisy: compare the ratios printed within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def part_sizes(tokens: int, parts: int, dist: str, alpha: float, seed: int) -> list[int]:
    if dist == "balanced":
        base, extra = divmod(tokens, parts)
        return [base + (i < extra) for i in range(parts)]
    weights = np.random.default_rng(seed).dirichlet(np.full(parts, alpha))
    sizes = np.floor(weights * tokens).astype(int)
    sizes[np.argmax(weights)] += tokens - sizes.sum()  # exact total
    return sizes.tolist()


def make_inputs(cfg: dict, requires_grad: bool):
    """q, k, v (N, H, D) in voxel order, and the PartGroups sorting them into parts."""
    from partgen.structures import part_groups

    g = torch.Generator().manual_seed(cfg["seed"])
    sizes = cfg["sizes"]
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    labels = labels[torch.randperm(len(labels), generator=g)]  # parts interleave in voxel order
    groups = part_groups(torch.zeros_like(labels), labels)
    device, dtype = torch.device(cfg["device"]), getattr(torch, cfg["dtype"])
    n, h, d = cfg["tokens"], cfg["heads"], cfg["head_dim"]
    qkv = [torch.randn(n, h, d, generator=g).to(device, dtype).requires_grad_(requires_grad) for _ in range(3)]
    return qkv, groups.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn, repeats: int, device: str) -> float:
    fn()  # warm-up (and compilation, for compiled backends)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb(device: str, baseline: float) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20 - baseline
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline


def _measure(fn_fwd, fn_fwdbwd, cfg) -> dict:
    device, repeats = cfg["device"], cfg["repeats"]
    baseline = torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb()
    result = {"fwd_ms": _median_ms(fn_fwd, repeats, device), "fwdbwd_ms": None}
    if fn_fwdbwd is not None:
        result["fwdbwd_ms"] = _median_ms(fn_fwdbwd, repeats, device)
    result["peak_mem_mb"] = round(_peak_mb(device, baseline), 1)
    return result


def run_backend(name: str, cfg: dict, queue) -> None:
    """Child process: time one backend (forward, and forward+backward when it supports it)."""
    try:
        torch.set_num_threads(cfg["threads"])
        from partgen.nn.attention import BACKENDS, _make_inputs, attention

        (q, k, v), groups = make_inputs(cfg, requires_grad=False)
        fwd_reasons = BACKENDS[name].not_supported_reasons(_make_inputs(q, k, v, groups, None, None))
        if fwd_reasons:
            queue.put((name, {"skipped": fwd_reasons}))
            return
        grad_inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        bwd_reasons = BACKENDS[name].not_supported_reasons(_make_inputs(*grad_inputs, groups, None, None))
        want_bwd = cfg["backward"] and not bwd_reasons
        grad_out = torch.randn_like(q)

        def fwd():
            with torch.no_grad():
                attention(q, k, v, groups, backend=name)

        def fwdbwd():
            out = attention(*grad_inputs, groups, backend=name)
            out.backward(grad_out)

        res = _measure(fwd, fwdbwd if want_bwd else None, cfg)
        if cfg["backward"] and bwd_reasons:
            res["no_backward"] = bwd_reasons
        queue.put((name, res))
    except Exception as err:  # report, keep the other backends running
        queue.put((name, {"error": f"{type(err).__name__}: {err}"}))


def run_full_sdpa(cfg: dict, queue) -> None:
    torch.set_num_threads(cfg["threads"])
    (q, k, v), _ = make_inputs(cfg, requires_grad=False)
    q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))  # (1, H, N, D)
    grad_inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    grad_out = torch.randn_like(q)

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v)

    def fwdbwd():
        F.scaled_dot_product_attention(*grad_inputs).backward(grad_out)

    queue.put(("full_sdpa", _measure(fwd, fwdbwd if cfg["backward"] else None, cfg)))


def matmul_gflops(device: str, dtype: torch.dtype, threads: int, size: int = 2048) -> float:
    torch.set_num_threads(threads)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ms = _median_ms(lambda: a @ b, 5, device)
    return 2 * size**3 / (ms / 1000) / 1e9


def in_child(target, *args):
    """Run target(*args, queue) in a fresh process; return what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"error": f"process exited with {proc.exitcode}"}
    return queue.get()[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Part attention benchmark (every backend, same inputs, one run)")
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--dist", choices=["balanced", "dirichlet"], default="balanced")
    p.add_argument("--alpha", type=float, default=0.7, help="Dirichlet concentration for --dist dirichlet")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--backends", default=None, help="comma-separated names (default: all the dispatcher knows)")
    p.add_argument("--no-full", action="store_true", help="skip full SDPA (it is N^2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    from partgen.nn.attention import BACKENDS

    names = args.backends.split(",") if args.backends else list(BACKENDS)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        p.error(f"unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    sizes = part_sizes(args.tokens, args.parts, args.dist, args.alpha, args.seed)
    cfg = {
        "tokens": args.tokens,
        "parts": args.parts,
        "dist": args.dist,
        "alpha": args.alpha if args.dist == "dirichlet" else None,
        "heads": args.heads,
        "head_dim": args.head_dim,
        "dtype": args.dtype,
        "device": args.device,
        "backward": args.backward,
        "repeats": args.repeats,
        "threads": args.threads,
        "seed": args.seed,
        "sizes": sizes,
    }
    sum_sq = sum(n * n for n in sizes)
    fwd_flops = 4 * args.heads * args.head_dim * sum_sq
    report = {
        "config": {k: v for k, v in cfg.items() if k != "sizes"} | {"part_sizes": sizes},
        "machine": {"matmul_gflops": round(matmul_gflops(args.device, getattr(torch, args.dtype), args.threads), 1)},
        "ideal_ratio": round(args.tokens**2 / sum_sq, 3),
        "full_sdpa": None if args.no_full else in_child(run_full_sdpa, cfg),
        "backends": {},
    }
    for name in names:
        res = in_child(run_backend, name, cfg)
        if "fwd_ms" in res:
            res["gflops"] = round(fwd_flops / (res["fwd_ms"] / 1000) / 1e9, 1)
        report["backends"][name] = res

    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def print_table(report: dict) -> None:
    c = report["config"]
    print(
        f"N={c['tokens']} P={c['parts']} {c['dist']} H={c['heads']} D={c['head_dim']} {c['dtype']} on {c['device']} "
        f"({c['threads']} threads); matmul {report['machine']['matmul_gflops']} GFLOP/s; ideal ratio {report['ideal_ratio']}x"
    )
    full = report["full_sdpa"] or {}
    print(
        f"{'backend':<14}{'fwd ms':>10}{'fwd+bwd ms':>12}{'peak MB':>10}{'GFLOP/s':>10}{'vs full fwd':>13}{'vs full f+b':>13}"
    )
    if full:
        print(
            f"{'full_sdpa':<14}{_fmt(full.get('fwd_ms')):>10}{_fmt(full.get('fwdbwd_ms')):>12}{_fmt(full.get('peak_mem_mb')):>10}"
        )
    for name, r in report["backends"].items():
        if "fwd_ms" not in r:
            why = r.get("error") or "; ".join(r.get("skipped", []))
            print(f"{name:<14}  not run: {why}")
            continue
        speed_fwd = full.get("fwd_ms") / r["fwd_ms"] if full.get("fwd_ms") else None
        speed_fb = full["fwdbwd_ms"] / r["fwdbwd_ms"] if full.get("fwdbwd_ms") and r["fwdbwd_ms"] else None
        print(
            f"{name:<14}{_fmt(r['fwd_ms']):>10}{_fmt(r['fwdbwd_ms']):>12}{_fmt(r['peak_mem_mb']):>10}{_fmt(r['gflops']):>10}"
            f"{_fmt(speed_fwd) + 'x' if speed_fwd else '-':>13}{_fmt(speed_fb) + 'x' if speed_fb else '-':>13}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
