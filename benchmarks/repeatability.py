"""Run-to-run repeatability: the same bench twice, back to back, and how far its latencies moved.

    .venv/bin/python benchmarks/repeatability.py                 # the demo's three variants of digits-cnn
    .venv/bin/python benchmarks/repeatability.py --runs 3 --processes 3 --out reports/repeatability.json

For every variant and batch size it prints the largest relative difference between runs of three figures:
the plain median of all timed calls (p50), the steady median (the quietest block; what the tables show) and
the interleaved speedup against the baseline. The harness aims at ≤ 5% for the steady median on an idle
machine; the script exits 1 when a steady median moved more than --tolerance, so it can gate a quiet CI runner.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import optikit
from optikit.harness.latency import headline_ms


def spread(values: list[float]) -> float:
    """Largest relative difference between any two runs: max / min - 1."""
    return max(values) / min(values) - 1 if values and min(values) > 0 else float("nan")


def figures(results: optikit.Results) -> dict[tuple[str, int], dict[str, float]]:
    out: dict[tuple[str, int], dict[str, float]] = {}
    for v in results.variants:
        for lat in v.latency:
            b = lat["batch_size"]
            paired = next((s for s in v.speedup if s["batch_size"] == b), None)
            out[(v.name, b)] = {"p50_ms": lat["p50_ms"], "steady_ms": headline_ms(lat),
                                "speedup": paired["ratio"] if paired else float("nan")}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn", help="teacher name or variant path (default digits-cnn)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0: the harness default")
    parser.add_argument("--processes", type=int, default=1, help="fresh processes per variant's latency (pooled)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    teacher = optikit.load(args.model) if Path(args.model).exists() else optikit.teach(args.model)
    variants = [teacher, *optikit.compress_chain(teacher, ["export-onnx", "quantize:mode=dynamic"])]
    runs = [figures(optikit.bench(variants, threads=args.threads or None, suite="none",
                                       processes=args.processes)) for _ in range(args.runs)]
    rows: list[dict[str, Any]] = []
    for key in runs[0]:
        row: dict[str, Any] = {"variant": key[0], "batch_size": key[1]}
        for metric in ("p50_ms", "steady_ms", "speedup"):
            row[metric] = [r[key][metric] for r in runs]
            row[f"{metric}_spread"] = spread(row[metric])
        rows.append(row)
    print(f"{'variant':<40} {'batch':>5} {'p50 moved':>10} {'steady moved':>13} {'speedup moved':>14}")
    for r in rows:
        cells = [f"{r[m]:.1%}" if r[m] == r[m] else "—" for m in ("p50_ms_spread", "steady_ms_spread", "speedup_spread")]
        print(f"{r['variant']:<40} {r['batch_size']:>5} {cells[0]:>10} {cells[1]:>13} {cells[2]:>14}")
    worst = max(r["steady_ms_spread"] for r in rows)
    print(f"largest steady-median difference between runs: {worst:.1%} (tolerance {args.tolerance:.0%})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
