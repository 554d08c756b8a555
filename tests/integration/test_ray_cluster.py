"""`optikit bench --executor ray --address` against a real two-node Ray cluster that never leaves 127.0.0.1, with Ray
2.60's token authentication on: the token is read from Ray's own variables, a missing one is one line, and a worker
node killed mid-matrix costs no cell (retried once, then recorded as failed with the reason, then `--resume`)."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import matrix_file

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

WAIT_S = 300.0  # generous: a shared 2-core machine can be slow; nothing asserts on time

# Ray 2.60's `ray start` rewrites a loopback address to the machine's outward one (services.resolve_ip_for_localhost)
# wherever multi-node clusters are enabled, and refuses a worker node where they are not
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). The head and the driver run with them disabled, so they keep 127.0.0.1 and
# every server binds to it alone; the worker node runs `ray start` with that one rewrite switched off.
WORKER_START = ("import ray._private.services as services; services.resolve_ip_for_localhost = lambda host: host; "
                "from ray.scripts.scripts import main; main()")

# Passes that stop inside their cell until the test lets them go, so the test knows which node runs which cell.
HOLD_PLUGIN = '''
"""Test passes: export-onnx, after a marker file and a wait while the hold file exists."""
import os
import time
from pathlib import Path

from optikit.passes.base import passes
from optikit.passes.export_onnx import ExportOnnx

FOLDER = Path({folder!r})


class _Held(ExportOnnx):
    def apply(self, variant, ctx, out):
        (FOLDER / f"started-{{self.name}}-{{os.getpid()}}").touch()
        deadline = time.monotonic() + 600
        while (FOLDER / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return super().apply(variant, ctx, out)


for name in ("test-hold-a", "test-hold-b"):
    if name not in passes.names():
        passes.register(name, type(name, (_Held,), {{"name": name}}))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended ({proc.returncode}): {log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {WAIT_S:g} s: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)


class LoopbackCluster:
    """A head and worker nodes started with `ray start --block`, so every process a node starts (raylet, Ray workers,
    cell processes) descends from one process this test owns: stopping a node kills exactly those, where
    `ray stop --force` would stop every Ray instance on the machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        # Ray's unix sockets live under its temp dir: a short path keeps them under the 107-byte limit.
        self.temp_dir = tempfile.mkdtemp(prefix="okray", dir="/tmp")

    def env(self, **extra: str) -> dict[str, str]:
        """The token the documented way (RAY_AUTH_MODE + RAY_AUTH_TOKEN), and nothing of the user's ~/.ray."""
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.pop("RAY_ADDRESS", None)
        return {**env, **extra}

    def _start(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with log.open("w") as fh:
            return subprocess.Popen([sys.executable, *args, "--block", "--disable-usage-stats"], env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_head(self) -> None:
        log = self.root / "head.log"
        self.head = self._start(["-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
                                 "--port", str(self.port), "--num-cpus", "1", "--include-dashboard=false",
                                 "--temp-dir", self.temp_dir], log, self.env())
        _wait("the head node", lambda: "Ray runtime started" in log.read_text(), self.head, log)

    def start_worker(self) -> subprocess.Popen:
        log = self.root / f"worker-{len(self.workers)}.log"
        proc = self._start(["-c", WORKER_START, "start", "--address", self.address, "--num-cpus", "1"], log,
                           self.env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1"))
        self.workers.append(proc)
        _wait("a worker node", lambda: "Ray runtime started" in log.read_text(), proc, log)
        return proc

    @staticmethod
    def descendants(proc: subprocess.Popen) -> set[int]:
        try:
            return {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL the node and everything it started, as a machine that dies would."""
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=30)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.head] if self.head else [])]:
            self.kill(proc)
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    c = LoopbackCluster(tmp_path_factory.mktemp("ray-cluster"))
    try:
        c.start_head()
        c.start_worker()
        yield c
    finally:
        c.stop()


@pytest.fixture
def bench() -> Iterator:
    """`bench(*ARGS, env=…, log=…)` starts `optikit bench ARGS` as its own process, as a user runs it (the driver's
    Ray settings come from its environment); any still running when the test ends is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        with log.open("w") as fh:
            started.append(subprocess.Popen([sys.executable, "-c", "from optikit.cli import main; main()", "bench",
                                             *args], env=env, stdout=fh, stderr=subprocess.STDOUT))
        return started[-1]
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _exit_code(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"optikit bench still running after {WAIT_S:g} s: {log.read_text()[-3000:]}")


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").rglob("*.json")
            if not p.name.endswith(".spec.json")}


def test_the_cluster_listens_on_the_loopback_address_only(cluster: LoopbackCluster) -> None:
    listening = {(c.laddr.ip, c.laddr.port) for proc in [cluster.head, *cluster.workers] if proc.poll() is None
                 for pid in {proc.pid, *cluster.descendants(proc)} for c in _connections(pid)
                 if c.status == psutil.CONN_LISTEN}
    assert (("127.0.0.1", cluster.port) in listening or ("::ffff:127.0.0.1", cluster.port) in listening), listening
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def _connections(pid: int) -> list:
    try:
        return psutil.Process(pid).net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []


def test_bench_runs_on_an_authenticated_cluster_with_rays_token_variables(cluster: LoopbackCluster, bench,
                                                                          digits_teacher, tmp_path: Path) -> None:
    m = matrix_file(tmp_path / "two.toml", digits_teacher.path, 'onnx = ["export-onnx"]')
    out, log = tmp_path / "out", tmp_path / "bench.log"
    proc = bench(str(m), "--out", str(out), "--executor", "ray", "--address", cluster.address, env=cluster.env(),
                 log=log)
    assert _exit_code(proc, log) == 0, log.read_text()[-3000:]
    records = _records(out)
    assert {n: r["status"] for n, r in records.items()} == {"baseline": "ok", "onnx": "ok"}, log.read_text()[-3000:]


def test_a_missing_or_wrong_token_is_one_line_naming_the_address_and_the_fix(cluster: LoopbackCluster, bench,
                                                                             digits_teacher, tmp_path: Path) -> None:
    m = matrix_file(tmp_path / "two.toml", digits_teacher.path, 'onnx = ["export-onnx"]')
    # Ray retries a refused connection for 20 s by default; two attempts say the same.
    quick = {"RAY_gcs_server_port_wait_time_s": "2"}
    no_token = {k: v for k, v in cluster.env(**quick).items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    wrong = cluster.env(RAY_AUTH_TOKEN="0" * 64, **quick)
    for env, expected in ((no_token, "needs its authentication token and none was sent"),
                          (wrong, "rejected the token from RAY_AUTH_TOKEN")):
        log = tmp_path / "bench.log"
        proc = bench(str(m), "--out", str(tmp_path / "out"), "--executor", "ray", "--address", cluster.address,
                     env=env, log=log)
        assert _exit_code(proc, log) == 2, log.read_text()[-3000:]
        text = log.read_text()
        [line] = [ln for ln in text.splitlines() if ln.startswith("optikit: error:")]
        assert f"the Ray cluster at {cluster.address} {expected}" in line, line
        assert "RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node" in line
        assert "Traceback" not in text and "0" * 64 not in text


# Two node kills, a node restart, three cells and a resumed run: ~40 s on an idle 2-core machine, more on a busy one.
@pytest.mark.slow
def test_a_worker_node_killed_mid_matrix_is_retried_then_recorded_and_resume_finishes(
        cluster: LoopbackCluster, bench, digits_teacher, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "optikit_test_hold_passes.py").write_text(HOLD_PLUGIN.format(folder=str(tmp_path)))
    m = matrix_file(tmp_path / "held.toml", digits_teacher.path,
                    'held-a = ["test-hold-a"]\n        held-b = ["test-hold-b"]',
                    plugins='plugins = ["optikit_test_hold_passes"]')
    env = cluster.env(PYTHONPATH=os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])))
    out, log = tmp_path / "out", tmp_path / "bench.log"

    def started() -> dict[str, list[int]]:
        """The pids of each held pass's cell processes, in the order they started."""
        found: dict[str, list[tuple[int, int]]] = {"test-hold-a": [], "test-hold-b": []}
        for p in tmp_path.glob("started-*"):
            name, _, pid = p.name.removeprefix("started-").rpartition("-")
            found[name].append((p.stat().st_mtime_ns, int(pid)))
        return {name: [pid for _, pid in sorted(found[name])] for name in found}

    hold.touch()
    proc = bench(str(m), "--out", str(out), "--executor", "ray", "--address", cluster.address, env=env, log=log)
    try:
        # Both held cells running: one per node (1 CPU each), so one of them is on the worker node.
        _wait("both held cells", lambda: all(started().values()), proc, log)
        first = cluster.workers[-1]
        on_worker = [n for n, pids in started().items() if pids[0] in cluster.descendants(first)]
        assert len(on_worker) == 1, (started(), cluster.descendants(first))
        [victim] = on_worker
        cluster.kill(first)
        # Ray runs the lost cell again; the head is busy, so it lands on the next worker node to join …
        second = cluster.start_worker()
        _wait("the retried cell", lambda: len(started()[victim]) == 2, proc, log)
        assert started()[victim][1] in cluster.descendants(second)
        cluster.kill(second)  # … and when that node dies too, the cell is recorded as failed
    finally:
        hold.unlink()
    assert _exit_code(proc, log) == 0, log.read_text()[-3000:]
    records = _records(out)
    survivor = next(f"held-{n[-1]}" for n in started() if n != victim)
    lost = f"held-{victim[-1]}"
    assert records["baseline"]["status"] == "ok" and records[survivor]["status"] == "ok", log.read_text()[-3000:]
    assert records[lost]["status"] == "failed"
    assert records[lost]["error"].startswith("ray task failed: ") and "(tried 2 times)" in records[lost]["error"]
    assert "`--resume` runs it again" in records[lost]["error"]

    again_log = tmp_path / "resume.log"
    again = bench(str(m), "--out", str(out), "--executor", "ray", "--address", cluster.address, "--resume", env=env,
                  log=again_log)
    assert _exit_code(again, again_log) == 0, again_log.read_text()[-3000:]
    text = again_log.read_text()
    assert "baseline: done earlier (resumed)" in text and f"{survivor}: done earlier (resumed)" in text
    assert {n: r["status"] for n, r in _records(out).items()} == {"baseline": "ok", "held-a": "ok", "held-b": "ok"}
