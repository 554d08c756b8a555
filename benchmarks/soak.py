"""Soak: the CI matrix once on a quiet machine, then several times beside a CPU hog (optikit issue 12).

A soak, not a test: it takes four times the CI matrix's few minutes and loads every core, so run it alone.

    .venv/bin/python benchmarks/soak.py                          # quiet, then 3 runs beside cpu-count busy loops
    .venv/bin/python benchmarks/soak.py --runs 3 --hogs 2 --out reports/soak
    .venv/bin/python benchmarks/soak.py --compare reports/soak   # re-reads a finished soak; runs nothing
    .venv/bin/python benchmarks/soak.py --dry-run                # prints what it would run

Every run beside the hog must, for each variant, either be flagged (its `conditions` entry in results.json says
starved or inconsistent) or agree with the quiet run within --tolerance (10%) on every ratio: each interleaved
speedup and the size ratio against the baseline. The script prints one line per run and exits 1 when one fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOG_CODE = "while True: pass"


@dataclass(frozen=True)
class VariantFigures:
    """What the soak compares of one variant in one run."""

    flagged: bool | None  # None: the run recorded no measurement conditions
    reasons: tuple[str, ...]
    ratios: dict[str, float]  # "speedup@32": interleaved ratio; "size": baseline bytes / variant bytes


def optikit_command() -> list[str]:
    script = Path(sys.executable).parent / "optikit"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from optikit.cli import main; main()"]


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", HOG_CODE]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    """Stops exactly the processes this script started."""
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        try:
            hog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait()


def run_bench(matrix: Path, out: Path) -> int:
    command = [*optikit_command(), "bench", str(matrix), "--out", str(out)]
    print(f"$ {' '.join(command)}", flush=True)
    began = time.monotonic()
    code = subprocess.run(command, check=False).returncode
    print(f"  exit {code} after {time.monotonic() - began:.0f} s", flush=True)
    return code


def _flag(conditions: Any) -> tuple[bool | None, tuple[str, ...]]:
    if not isinstance(conditions, dict):
        return None, ()
    return bool(conditions.get("starved") or conditions.get("inconsistent")), tuple(conditions.get("reasons") or ())


def read_run(out: Path) -> dict[tuple[str, str], VariantFigures]:
    """Every variant of every results.json under `out` (one per matrix group), keyed by (group folder, name)."""
    found: dict[tuple[str, str], VariantFigures] = {}
    for path in sorted(out.rglob("results.json")):
        if "cells" in path.relative_to(out).parts:
            continue
        results = json.loads(path.read_text(encoding="utf-8"))
        group = str(path.parent.relative_to(out))
        variants = results.get("variants") or []
        base = next((v for v in variants if v.get("id") == results.get("baseline_id")), None)
        base_bytes = ((base or {}).get("size") or {}).get("bytes_on_disk")
        for v in variants:
            ratios = {f"speedup@{s['batch_size']}": float(s["ratio"]) for s in v.get("speedup") or []
                      if s.get("ratio") is not None}
            mine = (v.get("size") or {}).get("bytes_on_disk")
            if v is not base and mine and base_bytes:
                ratios["size"] = base_bytes / mine
            flagged, reasons = _flag(v.get("conditions"))
            found[(group, v["name"])] = VariantFigures(flagged, reasons, ratios)
    return found


@dataclass(frozen=True)
class RunOutcome:
    name: str
    flagged: list[str]  # variants flagged starved or inconsistent
    recorded: bool  # whether the run recorded measurement conditions at all
    worst: float | None  # the largest relative difference from the quiet run among unflagged variants
    worst_what: str
    missing: list[str]  # variants of the quiet run this run lacks (a failed cell)

    def passed(self, tolerance: float) -> bool:
        return not self.missing and (self.worst is None or self.worst <= tolerance)


def compare(name: str, quiet: dict[tuple[str, str], VariantFigures],
            run: dict[tuple[str, str], VariantFigures]) -> RunOutcome:
    flagged = [f"{k[1]}" for k, v in run.items() if v.flagged]
    recorded = any(v.flagged is not None for v in run.values())
    worst, worst_what, missing = None, "", []
    for key, ref in quiet.items():
        mine = run.get(key)
        if mine is None:
            missing.append(key[1])
            continue
        if mine.flagged:
            continue  # flagged: the run said its figures are not to be trusted, which is what the soak asks
        for ratio, value in ref.ratios.items():
            other = mine.ratios.get(ratio)
            if other is None or value <= 0:
                missing.append(f"{key[1]} {ratio}")
                continue
            diff = abs(other / value - 1)
            if worst is None or diff > worst:
                worst, worst_what = diff, f"{key[1]} {ratio} {other:.3g} vs quiet {value:.3g}"
    return RunOutcome(name, flagged, recorded, worst, worst_what, missing)


def report(quiet_dir: Path, run_dirs: list[Path], tolerance: float) -> int:
    quiet = read_run(quiet_dir)
    if not quiet:
        print(f"no results.json under {quiet_dir}: the quiet run did not finish")
        return 2
    noisy_reference = [k[1] for k, v in quiet.items() if v.flagged]
    if noisy_reference:
        print(f"warning: the quiet run flagged {', '.join(noisy_reference)}: the reference itself was not quiet")
    print(f"{'run':<12} {'conditions':<34} {'largest ratio difference (unflagged variants)':<64} outcome")
    all_passed = True
    for run_dir in run_dirs:
        outcome = compare(run_dir.name, quiet, read_run(run_dir))
        if not outcome.recorded:
            conditions = "not recorded"
        elif outcome.flagged:
            conditions = f"flagged: {', '.join(outcome.flagged)}"[:34]
        else:
            conditions = "nothing flagged"
        difference = ("—" if outcome.worst is None else f"{outcome.worst:.1%} ({outcome.worst_what})")[:64]
        passed = outcome.passed(tolerance)
        all_passed &= passed
        verdict = "PASS" if passed else "FAIL"
        if outcome.missing:
            verdict += f" (missing: {', '.join(outcome.missing)})"
        print(f"{outcome.name:<12} {conditions:<34} {difference:<64} {verdict}")
    print(f"tolerance {tolerance:.0%}: {'every run was flagged or agreed with the quiet run' if all_passed else 'FAIL'}")
    return 0 if all_passed else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=ROOT / "benchmarks" / "ci.toml")
    parser.add_argument("--runs", type=int, default=3, help="runs beside the hog (default 3)")
    parser.add_argument("--hogs", type=int, default=0, help="busy-loop processes (default: one per core)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="largest relative ratio difference (0.10)")
    parser.add_argument("--out", type=Path, default=None, help="default: reports/soak-<date-time>")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="re-read a finished soak in DIR; runs nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.hogs < 0:
        parser.error("--runs must be ≥ 1 and --hogs ≥ 0")
    if args.compare is not None:
        runs = sorted(p for p in args.compare.glob("hogged-*") if p.is_dir())
        return report(args.compare / "quiet", runs, args.tolerance)
    out = args.out or ROOT / "reports" / time.strftime("soak-%Y%m%d-%H%M%S")
    hogs = args.hogs or os.cpu_count() or 1
    runs = [out / f"hogged-{i + 1}" for i in range(args.runs)]
    if args.dry_run:
        for target in [out / "quiet", *runs]:
            beside = f"  (beside {hogs} busy loops)" if target.name != "quiet" else ""
            print(f"{' '.join([*optikit_command(), 'bench', str(args.matrix), '--out', str(target)])}{beside}")
        return 0
    run_bench(args.matrix, out / "quiet")
    for target in runs:
        print(f"starting {hogs} busy loop{'s' if hogs != 1 else ''}", flush=True)
        procs = start_hogs(hogs)
        try:
            time.sleep(1.0)  # let the hogs take their cores before the matrix starts
            run_bench(args.matrix, target)
        finally:
            stop_hogs(procs)
    return report(out / "quiet", runs, args.tolerance)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
