"""Refreshes the committed sample in reports/sample/: the CI matrix's summary.md and results.json, and a
screenshot of its report.html as headless Chromium draws it.

    .venv/bin/python benchmarks/sample_report.py            # runs benchmarks/ci.toml into reports/ci first
    .venv/bin/python benchmarks/sample_report.py --reuse    # takes an existing reports/ci
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def screenshot(page: Path, target: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not installed (apt-get install chromium): the screenshot is part of the sample")
    profile = target.parent / ".chromium-profile"
    try:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
                        "--virtual-time-budget=8000", "--window-size=1280,2400", f"--screenshot={target}",
                        page.as_uri()], check=True, capture_output=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="use reports/ci as it is")
    opts = parser.parse_args()
    run = ROOT / "reports" / "ci"
    if not opts.reuse:
        subprocess.run([str(Path(sys.executable).parent / "optikit"), "bench", str(ROOT / "benchmarks" / "ci.toml"),
                        "--out", str(run)], check=True)
    sample = ROOT / "reports" / "sample"
    sample.mkdir(parents=True, exist_ok=True)
    for name in ("summary.md", "results.json"):
        shutil.copy(run / name, sample / name)
    screenshot(run / "report.html", sample / "report.png")
    print(f"refreshed {sample}: summary.md, results.json, report.png")


if __name__ == "__main__":
    main()
