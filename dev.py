#!/usr/bin/env python3
"""Sets up .venv (once, or again when pyproject.toml changes) and runs optikit or its tests in it.

    python3 dev.py demo          # install, then `optikit demo` on the embedded default
    python3 dev.py test [ARGS]   # install, then the test suite (pytest ARGS)
    python3 dev.py optikit ARGS  # install, then any optikit command
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("OPTIKIT_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
# torch first and pinned: the CPU build lies on the build machines' disk, and a resolver left to choose would
# download a multi-GB CUDA build.
TORCH = "torch==2.13.0"
# Every extra: the test suite exercises MLflow tracking, the Ray executor, Optuna search, the Trainer hook, Intel
# Neural Compressor, the serving app and OpenVINO.
EXTRAS = "dev,tracking,search,ray,hf,inc,serve,serve-ray,openvino"


def _stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode() + EXTRAS.encode()).hexdigest()


def ensure_venv() -> None:
    stamp = VENV / ".optikit-installed"
    if stamp.is_file() and stamp.read_text() == _stamp():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--quiet", "--disable-pip-version-check"]
    print(f"installing {TORCH}", flush=True)
    subprocess.run([*pip, TORCH], check=True)
    print("installing optikit and its pinned dependencies", flush=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{EXTRAS}]"], check=True)
    stamp.write_text(_stamp())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "optikit"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        args = [str(BIN / "optikit"), "demo", *rest]
    elif command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    else:
        args = [str(BIN / "optikit"), *rest]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
