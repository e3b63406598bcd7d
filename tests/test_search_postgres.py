"""A search on a real PostgreSQL server with workers that share nothing but its URL: each a
separate `laserkit worker` process in its own working directory; two killed with SIGKILL while
each holds a running trial, then a late joiner takes the waiting and the stale trials. The
final table must equal a one-process SQLite run's, number for number.

The server is started here (initdb + pg_ctl in a temporary directory) from the PostgreSQL
binaries of the `pgserver` wheel (installed by `make setup` from the lock: no system server is
needed); when the tests run as root, as the unprivileged `postgres` user, or `pgserver`'s own
user (created with useradd as that package does) on a machine without one, since initdb
refuses root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from test_search_cli import invoke, tiny_dir  # noqa: F401 - tiny_dir is a fixture

from laserkit.io.load import load
from laserkit.search import open_run

pytestmark = pytest.mark.usefixtures("one_thread")

LASERKIT = str(Path(sys.executable).with_name("laserkit"))
RUN = "fever-run"
GRID = (
    "--task",
    "fever-bigbench",
    "--limit",
    "20",
    "--lnum",
    "-4:",
    "--rho",
    "0.5,0.1",
    "--batch-size",
    "4",
    "--dtype",
    "float32",
    "--device",
    "cpu",
    "--heartbeat",
    "1",
    "--grace",
    "3",
)


def pg_bin() -> Path:
    """The PostgreSQL server binaries shipped in the pgserver wheel (the dev extra)."""
    try:
        import pgserver
    except ImportError:
        pytest.fail(
            "pgserver is not installed: `make setup` installs it (the dev extra); this "
            "test starts a real server from its binaries"
        )
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def server_user() -> pwd.struct_passwd:
    """The unprivileged user a root test runs the server as: postgres, else pgserver's."""
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        from pgserver.utils import ensure_user_exists

        return ensure_user_exists("pgserver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A fresh PostgreSQL server on 127.0.0.1 with an empty database; its URL."""
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="laserkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        pw = server_user()
        os.chown(root, pw.pw_uid, pw.pw_gid)
        root.chmod(0o755)
        as_user = ["runuser", "-u", pw.pw_name, "--"]
    port = free_port()

    def pg(*args: object, check: bool = True) -> None:
        done = subprocess.run([*as_user, *map(str, args)], capture_output=True, text=True)
        if check and done.returncode:
            pytest.fail(f"{args[0]} failed: {done.stderr or done.stdout}")

    pg(
        bindir / "initdb",
        "-D",
        root / "data",
        "-A",
        "trust",
        "-U",
        "laserkit",
        "--no-sync",
        "-E",
        "UTF8",
    )
    pg(
        bindir / "pg_ctl",
        "-D",
        root / "data",
        "-l",
        root / "log",
        "-w",
        "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off",
        "start",
    )
    try:
        pg(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "laserkit", "laserkit")
        yield f"postgresql://laserkit@127.0.0.1:{port}/laserkit"
    finally:
        pg(bindir / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def start_worker(url: str, cwd: Path) -> subprocess.Popen:
    """`laserkit worker URL --run NAME` in its own directory: the URL is all it is given."""
    cwd.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [LASERKIT, "worker", url, "--run", RUN, "--threads", "1", "--device", "cpu"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def trials_of(store, proc: subprocess.Popen, state: TrialState) -> list:
    me = f"{socket.gethostname()}:{proc.pid}"
    return [
        t
        for t in store.study.get_trials(deepcopy=False, states=(state,))
        if t.user_attrs.get("worker") == me
    ]


def step_until(what, procs: tuple, step_s: float, timeout: float = 300.0):
    """Let each worker run for ``step_s`` in turn, frozen (SIGSTOP) otherwise, until ``what()``
    (looked at while all are frozen) is true; returns it with every worker still frozen. A
    worker cannot then finish the run between two looks however fast its trials are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            os.kill(p.pid, signal.SIGCONT)
            time.sleep(step_s)
            os.kill(p.pid, signal.SIGSTOP)
        time.sleep(0.002)  # let the stops land before looking
        got = what()
        if got:
            return got
    raise AssertionError(f"timed out waiting for {what.__name__}")


def timeless(obj):
    """A result without wall-clock seconds (the one number that is not a function of the run)."""
    if isinstance(obj, dict):
        return {k: timeless(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [timeless(v) for v in obj]
    return obj


def test_workers_sharing_only_a_postgres_url_give_the_one_process_table(
    tmp_path,
    tiny_dir,  # noqa: F811 - a fixture
    postgres,
):
    url = postgres
    ref_dir = tmp_path / "sqlite" / RUN  # one process, SQLite in the run directory
    invoke("search", tiny_dir, *GRID, "--run-dir", ref_dir, "--no-save")
    reference = json.loads((ref_dir / "result.json").read_text())

    invoke(
        "search",
        tiny_dir,
        *GRID,
        "--storage",
        url,
        "--run",
        RUN,
        "--workers",
        "0",
        "--run-dir",
        tmp_path / "A",
    )  # machine A only creates the run
    store = open_run(url, RUN)
    assert store.config.model == str(tiny_dir.resolve())

    c = start_worker(url, tmp_path / "C")
    b = start_worker(url, tmp_path / "B")

    def c_did_a_trial():
        return trials_of(store, c, TrialState.COMPLETE)

    def holding_a_trial(p: subprocess.Popen):
        def look():
            return trials_of(store, p, TrialState.RUNNING)

        look.__name__ = f"worker {p.pid} holding a trial"
        return look

    # the workers run in slow motion: a tiny model's trial takes milliseconds, and two free
    # workers finished all 16 between two looks on a quiet machine
    step_until(c_did_a_trial, (b, c), step_s=0.02)
    killed = []
    for p in (c, b):  # both machines die mid-trial (a frozen one would hold its row locks)
        (held,) = step_until(holding_a_trial(p), (c, b) if p is c else (b,), step_s=0.003)
        os.kill(p.pid, signal.SIGKILL)  # frozen, holding the trial it was seen holding
        assert p.wait() == -signal.SIGKILL
        killed.append(held)
    for p in (b, c):
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
    d = start_worker(url, tmp_path / "D")  # joins late: takes the waiting and the stale trials
    assert d.wait(timeout=300) == 0, d.stderr.read().decode()[-2000:]
    assert trials_of(store, d, TrialState.COMPLETE)

    result = store.result()
    assert timeless(result) == timeless(reference)  # every number of the table, bit for bit
    assert len(result["trials"]) == 2 * 4 * 2

    for held in killed:  # each killed trial failed and was run again by another worker
        key = held.user_attrs["spec"]["key"]
        states = [
            t.state
            for t in store.study.get_trials(deepcopy=False)
            if t.user_attrs.get("spec", {}).get("key") == key
        ]
        assert TrialState.FAIL in states and TrialState.COMPLETE in states
    done = store.results()
    assert set(done) == {r.spec["key"] for r in open_run(ref_dir).results().values()}
    for r in done.values():  # records in the database, whole
        assert len(store.records(r)) == r.summary["n"]

    report = tmp_path / "report"
    invoke("report", url, "--run", RUN, "--out", report)
    assert (report / "report.md").exists() and (report / "heatmap_fc_in.png").exists()
    status = invoke("status", url, "--run", RUN)
    assert "finished" in status.output and "not finished" not in status.output
    invoke("apply", url, "--run", RUN, "--out", tmp_path / "pg-model")
    invoke("apply", ref_dir, "--out", tmp_path / "sqlite-model")
    a = load(tmp_path / "pg-model", dtype="float32", device="cpu").model
    s = load(tmp_path / "sqlite-model", dtype="float32", device="cpu").model
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), s.parameters(), strict=True))
