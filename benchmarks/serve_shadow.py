"""Shadow overhead: what running the int8 MiniLM in shadow costs the served path, and whether the agreement the
shadow measures on live traffic equals the agreement `optikit bench` measures offline (optikit issue 13).

A benchmark, not a test: it serves the MiniLM teacher twice (alone, then with its int8 variant in shadow), replays
the Made With ML test split against each at a fixed rate, and prints the served latency (client-side and as the
server logged it), requests per second, shadow drops and the two agreements. Run it alone on a quiet machine.

    .venv/bin/python benchmarks/serve_shadow.py                        # 10 rps, the test split once per phase
    .venv/bin/python benchmarks/serve_shadow.py --rps 20 --duration 120 --loop --out reports/serve-shadow
    .venv/bin/python benchmarks/serve_shadow.py --duration 5 --skip-bench   # a smoke run of the plumbing

Needs the teacher (`optikit teach minilm-tags`, cached in OPTIKIT_HOME); the int8 variant is made when missing
(`optikit compress minilm-tags --pass quantize`). Exits 1 when the two agreements differ, 0 otherwise (also when
the data is absent: it says so and skips). The issue's target: the shadow adds at most 5% to the served p50.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPTIKIT_MADEWITHML", ROOT.parent / "shared" / "data" / "madewithml" / "dataset.csv"))
P50_TARGET = 1.05  # shadow p50 / single p50, on 2 cores


@dataclass(frozen=True)
class Phase:
    """One server run and what replay and the log say about it."""

    name: str
    replay: Any  # optikit.serve.replay.ReplayStats
    server_p50_ms: float
    server_p99_ms: float
    shadow_dropped: int
    log: Path


def optikit_command() -> list[str]:
    script = Path(sys.executable).parent / "optikit"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from optikit.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def int8_variant(teacher: Path, given: str | None, pass_spec: str) -> Path:
    """The int8 variant: the path given, else `optikit compress` (which reuses an identical earlier result)."""
    if given:
        return Path(given)
    print(f"int8 variant: optikit compress {teacher} --pass {pass_spec} (reused when it already exists)", flush=True)
    done = subprocess.run([*optikit_command(), "compress", str(teacher), "--pass", pass_spec], check=True,
                          capture_output=True, text=True)
    paths = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    if not paths:
        raise SystemExit(f"optikit compress printed no variant path:\n{done.stdout}{done.stderr}")
    return Path(paths[-1])


def write_test_split(teacher: Any, out: Path) -> tuple[Path, int]:
    """The teacher's test split, each text exactly as bench feeds it (title and description already joined)."""
    import pandas as pd

    from optikit.data import load_dataset

    test = load_dataset(teacher.data, teacher.task.label_names).take(teacher.splits.test)
    path = out / "test-split.parquet"  # Parquet keeps every text byte for byte (a CSV reads "NA" as missing)
    pd.DataFrame({"text": test.inputs, "label": [test.label_names[i] for i in test.labels]}).to_parquet(path)
    return path, len(test)


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"optikit serve exited with code {server.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"optikit serve was not healthy within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stops exactly the server this script started: Ctrl-C first (uvicorn drains and closes the log), then kill."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def log_frame(path: Path) -> tuple[Any, dict[str, int]]:
    from optikit.serve.log import RequestLog

    log = RequestLog.open(path)
    try:
        return log.frame(), log.counters()
    finally:
        log.close()


def wait_for_shadow(path: Path, timeout: float) -> None:
    """Until every logged request has its shadow result or was counted as dropped (the queue drains after replay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame, counters = log_frame(path)
        if int(frame["candidate_label"].notna().sum()) + counters.get("shadow_dropped", 0) >= len(frame):
            return
        time.sleep(1.0)
    print(f"  (the shadow queue had not drained after {timeout:.0f} s: the figures use what the log holds)", flush=True)


def run_phase(name: str, teacher: Path, extra: list[str], split: Path, work: Path, args: argparse.Namespace) -> Phase:
    from optikit.serve.replay import replay

    port, log = free_port(), work / f"{name}.db"
    url = f"http://127.0.0.1:{port}"
    command = [*optikit_command(), "serve", str(teacher), "--host", "127.0.0.1", "--port", str(port), "--log", str(log),
               *extra, *(["--threads", str(args.threads)] if args.threads else [])]
    print(f"{name}: optikit {' '.join(command[len(optikit_command()):])}", flush=True)
    with (work / f"{name}.out").open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, server, args.start_timeout)
            if args.warmup:
                replay(split, url, rps=args.rps, duration=args.warmup / args.rps, text_cols=("text",), loop=True)
            measured_from = time.time()
            stats = replay(split, url, rps=args.rps, duration=args.duration, text_cols=("text",), label_col="label",
                           concurrency=args.concurrency, loop=args.loop)
            print(f"  {stats.summary()}", flush=True)
            if "--shadow" in extra:
                wait_for_shadow(log, args.drain_timeout)
        except Exception:
            print((work / f"{name}.out").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            stop(server)
    frame, counters = log_frame(log)
    served = frame[(frame["ts"] >= measured_from) & frame["baseline_ms"].notna()]["baseline_ms"]
    p50, p99 = (float(served.quantile(q)) for q in (0.5, 0.99)) if len(served) else (float("nan"),) * 2
    return Phase(name, stats, p50, p99, counters.get("shadow_dropped", 0), log)


def live_agreement(log: Path) -> tuple[int, int, set[str]]:
    """(agreeing, compared, texts compared) over the distinct inputs both models answered in the shadow log."""
    frame, _ = log_frame(log)
    both = frame[frame["baseline_label"].notna() & frame["candidate_label"].notna() & frame["input"].notna()]
    both = both.drop_duplicates("input")  # a replayed text gets the same answers each time: count it once
    agree = int((both["baseline_label"].astype(int) == both["candidate_label"].astype(int)).sum())
    return agree, len(both), set(both["input"])


def offline_agreement(teacher: Path, int8: Path, texts: set[str]) -> tuple[float, int, int]:
    """optikit bench's harness on the two variants, evaluating in batches of one as the server does (the CLI's
    batches of 64 pad short texts, and dynamic int8 sets its activation scales per batch, pads included): its
    agreement on the whole split, and the agreeing and compared counts on `texts`, from its flipped examples."""
    from optikit.harness.bench import BenchConfig, bench
    from optikit.harness.latency import LatencyConfig
    from optikit.harness.significance import SignificanceConfig
    from optikit.harness.timing import MIN_SPEEDUP_ROUNDS, SpeedupConfig
    from optikit.variant import load_variant

    print("offline: optikit bench's harness, evaluation batches of 1 (quick timing: only its agreement is used)",
          flush=True)
    config = BenchConfig(latency=LatencyConfig(batch_sizes=(1,), min_iterations=3, min_seconds=0.0),
                         speedup=SpeedupConfig(rounds=MIN_SPEEDUP_ROUNDS), significance=SignificanceConfig(resamples=100),
                         eval_batch_size=1, suite="none", max_flipped=10**6)
    results = bench([load_variant(teacher), load_variant(int8)], config)
    fidelity = next(v for v in results.variants if not v.is_baseline).fidelity
    if fidelity is None:
        raise SystemExit("optikit bench recorded no agreement for the int8 variant: see its notes")
    flipped = {f.text for f in fidelity.flipped}
    return fidelity.agreement, len(texts) - len(texts & flipped), len(texts)


def ms(value: float) -> str:
    return f"{value:8.1f}"


def print_table(single: Phase, shadow: Phase) -> None:
    print("\nphase    client p50  client p99  server p50  server p99  achieved rps  answered  errors  late  shadow drops")
    for phase in (single, shadow):
        r = phase.replay
        print(f"{phase.name:<8} {ms(r.client_p50_ms)} ms {ms(r.client_p99_ms)} ms {ms(phase.server_p50_ms)} ms "
              f"{ms(phase.server_p99_ms)} ms  {r.achieved_rps:12.2f}  {r.answered:8d}  {r.errors:6d}  "
              f"{r.dropped_late:4d}  {phase.shadow_dropped:12d}")
    ratio = shadow.replay.client_p50_ms / single.replay.client_p50_ms
    ratio99 = shadow.replay.client_p99_ms / single.replay.client_p99_ms
    server_ratio = shadow.server_p50_ms / single.server_p50_ms
    verdict = "met" if ratio <= P50_TARGET else "missed"
    print(f"shadow/single: client p50 x{ratio:.3f}, client p99 x{ratio99:.3f}, server p50 x{server_ratio:.3f} "
          f"(target: p50 at most x{P50_TARGET:.2f}: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=10.0, help="Requests per second (default 10).")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="Seconds per phase at most (default 60; without --loop it ends when the split does).")
    parser.add_argument("--loop", action="store_true", help="Cycle the test split until --duration.")
    parser.add_argument("--concurrency", type=int, default=16, help="Replay workers (default 16).")
    parser.add_argument("--warmup", type=int, default=20, help="Requests sent before measuring (default 20).")
    parser.add_argument("--threads", type=int, help="optikit serve --threads (default: its own).")
    parser.add_argument("--variant", help="The int8 variant folder (default: made or reused by optikit compress).")
    parser.add_argument("--pass-spec", default="quantize", help="The pass that makes the variant (default quantize).")
    parser.add_argument("--skip-bench", action="store_true", help="Do not run optikit bench (no offline agreement).")
    parser.add_argument("--out", type=Path, help="Keep the logs, server output and bench results here.")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="Seconds a server may take to load.")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="Seconds to wait for the shadow queue.")
    args = parser.parse_args(argv)
    if not DATA.is_file():
        print(f"serve_shadow: skipped: the Made With ML data is not at {DATA}; set OPTIKIT_MADEWITHML to its "
              "dataset.csv", flush=True)
        return 0
    from optikit import api
    from optikit._io import write_text_atomic

    teacher = api.teach("minilm-tags", data=DATA)
    int8 = int8_variant(teacher.path, args.variant, args.pass_spec)
    print(f"teacher {teacher.path}\nint8    {int8}", flush=True)
    with tempfile.TemporaryDirectory(prefix="optikit-serve-shadow-") as scratch:
        work = args.out or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        split, examples = write_test_split(teacher, work)
        print(f"test split: {examples} examples; {args.rps:g} rps for up to {args.duration:g} s per phase", flush=True)
        single = run_phase("single", teacher.path, [], split, work, args)
        shadow = run_phase("shadow", teacher.path, ["--shadow", str(int8), "--log-inputs"], split, work, args)
        print_table(single, shadow)
        agree, compared, texts = live_agreement(shadow.log)
        live = agree / compared if compared else float("nan")
        print(f"agreement (live, shadow log): {live:.4f} = {agree}/{compared} distinct test examples")
        if args.skip_bench or not compared:
            return 0
        whole, off_agree, off_compared = offline_agreement(teacher.path, int8, texts)
        same = off_agree == agree and off_compared == compared
        print(f"agreement (offline, optikit bench): {off_agree / off_compared:.4f} = {off_agree}/{off_compared} on the "
              f"same examples ({whole:.4f} on all {examples}): {'equal' if same else 'DIFFERENT'}")
        summary = {"single": single.replay.to_dict(), "shadow": shadow.replay.to_dict(), "live_agreement": live,
                   "offline_agreement_same_examples": off_agree / off_compared, "offline_agreement_split": whole}
        if args.out:
            write_text_atomic(work / "serve_shadow.json", json.dumps(summary, indent=2, default=str))
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
