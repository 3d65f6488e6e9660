"""Coverage of the semantic part taxonomy on a folder of annotated records.

    python scripts/taxonomy_report.py /tmp/sh3d64 [--examples 30] [--unmapped 40] [--include-eval]

Prints the share of parts, surface samples and assets that get a semantic class, per-class
counts (parts, assets, samples), example part names per class with the keyword that decided, and
the most frequent names left unmapped, for auditing partgen.data_pipeline.taxonomy. Records of the
evaluation-only libraries (Scopia) are skipped unless --include-eval.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import sys

import numpy as np

from partgen.data_pipeline.datasets import list_records
from partgen.data_pipeline.taxonomy import CLASSES, explain


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="partgen-annotate output folders or manifest files")
    p.add_argument("--examples", type=int, default=30, help="example names per class")
    p.add_argument("--unmapped", type=int, default=40, help="most frequent unmapped names to list")
    p.add_argument("--statuses", default="ok", help="comma-separated manifest statuses to include")
    p.add_argument("--include-eval", action="store_true", help="also count evaluation-only libraries")
    p.add_argument("--seed", type=int, default=0, help="which examples are shown")
    args = p.parse_args(argv)

    records = [ref for ref, _ in list_records(args.roots, tuple(args.statuses.split(",")))]
    skipped = sum(ref.eval_only for ref in records)
    if not args.include_eval:
        records = [ref for ref in records if not ref.eval_only]
    if not records:
        print("no records", file=sys.stderr)
        return 1

    parts = mapped_parts = 0
    samples = mapped_samples = 0
    assets_any = assets_half = assets_all = 0
    cls_parts = collections.Counter()
    cls_assets = collections.defaultdict(set)
    cls_samples = collections.Counter()
    examples = collections.defaultdict(dict)  # class -> {name: keyword}
    unmapped = collections.Counter()
    per_library = collections.defaultdict(lambda: [0, 0, 0, 0])  # parts, mapped parts, samples, mapped samples
    for ref in records:
        with np.load(ref.path / "samples.npz") as z:
            counts = np.bincount(z["part"].astype(np.int64), minlength=len(ref.part_names))
        total = int(counts.sum())
        got = 0
        lib = per_library[ref.library or "-"]
        for name, count in zip(ref.part_names, counts.tolist(), strict=True):
            cls, keyword = explain(name)
            parts += 1
            lib[0] += 1
            lib[2] += count
            if cls is None:
                unmapped[re.sub(r"#\d+$", "", name)] += 1
                continue
            mapped_parts += 1
            lib[1] += 1
            lib[3] += count
            got += count
            cls_parts[cls] += 1
            cls_assets[cls].add(ref.key)
            cls_samples[cls] += count
            examples[cls].setdefault(name, keyword)
        samples += total
        mapped_samples += got
        assets_any += got > 0
        assets_half += got >= 0.5 * total
        assets_all += got == total

    n = len(records)
    print(f"records: {n}" + (f" ({skipped} evaluation-only skipped)" if skipped and not args.include_eval else ""))
    print(f"parts with a class:           {mapped_parts}/{parts} = {mapped_parts / parts:.1%}")
    print(f"surface samples with a class: {mapped_samples / samples:.1%}")
    print(f"assets with >= 1 classed part: {assets_any}/{n} = {assets_any / n:.1%}")
    print(f"assets with >= 50% of samples classed: {assets_half}/{n} = {assets_half / n:.1%}")
    print(f"assets fully classed: {assets_all}/{n} = {assets_all / n:.1%}")
    print()
    print(f"{'library':<18}{'parts':>7}{'classed':>9}{'samples classed':>17}")
    for library, (lp, lm, ls, lms) in sorted(per_library.items()):
        print(f"{library:<18}{lp:>7}{lm / lp:>9.1%}{lms / max(ls, 1):>17.1%}")
    print()
    print(f"{'class':<10}{'parts':>7}{'assets':>8}{'samples':>9}")
    for cls in CLASSES:
        print(f"{cls:<10}{cls_parts[cls]:>7}{len(cls_assets[cls]):>8}{cls_samples[cls] / samples:>9.2%}")
    print()
    rng = random.Random(args.seed)
    for cls in CLASSES:
        names = sorted(examples[cls])
        shown = sorted(rng.sample(names, min(args.examples, len(names))), key=str.lower)
        print(f"[{cls}] {len(names)} distinct names; {len(shown)} shown (name -> keyword)")
        for name in shown:
            print(f"    {name} -> {examples[cls][name]}")
    print()
    print(f"most frequent unmapped names ({len(unmapped)} distinct):")
    print("    " + ", ".join(f"{name} ({c})" for name, c in unmapped.most_common(args.unmapped)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
