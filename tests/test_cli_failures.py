"""What a user gets from the INSTALLED ``laserkit`` command when something goes wrong.

Every row of the table runs the console script in a subprocess and checks: the exit status,
exactly one line on stderr naming the problem, no traceback, and the files involved before and
after (earlier outputs intact, no partial files, resumable state kept). Interrupts send SIGINT
at a seeded random moment of each long command (scan, eval, search, save) and then continue the
work (scan again, search --resume) to show that what was kept is usable.

Subprocesses run in a thread pool: each one spends most of its time importing torch.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import default_sigint, make_tiny

from laserkit.core.fileio import PARTIAL, partial_files

SEED = 20261123
BIN = Path(sys.prefix) / "bin" / "laserkit"
LASERKIT = str(BIN) if BIN.exists() else shutil.which("laserkit")


def _no_partials(folder: Path) -> None:
    assert partial_files(folder) == [], f"partial files left in {folder}"
    assert not [p for p in folder.rglob(".*.old-*")]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (a single file: itself)."""
    if path.is_file():
        return {"": path.read_bytes()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@dataclass
class Ran:
    rc: int
    out: str
    err: str

    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def laserkit(
    *args: str,
    cwd: Path | None = None,
    umask: int | None = None,
    fsize: int | None = None,
    timeout: float = 240,
) -> Ran:
    """Run the installed console script; ``fsize`` caps the size of any file it writes (a
    stand-in for a full disk: the write fails with EFBIG), ``umask`` sets the user's umask."""

    def pre() -> None:
        if umask is not None:
            os.umask(umask)
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    p = subprocess.run(
        [LASERKIT, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        preexec_fn=pre,
        env=_env(),
    )
    return Ran(p.returncode, p.stdout, p.stderr)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASERKIT_DEBUG")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # several of these run at once on a small machine
    return env


def interrupted(
    args: list[str], ready, delay: tuple[float, float], rng: random.Random, timeout: float = 240
) -> tuple[Ran, float]:
    """Start the command, wait until ``ready()`` says its long work is under way, then after a
    random delay in ``delay`` send SIGINT; returns what it printed and the delay used."""
    p = subprocess.Popen(
        [LASERKIT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + timeout
    while not ready() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    wait = rng.uniform(*delay)
    time.sleep(wait)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout)
    return Ran(p.returncode, out, err), wait


# ----------------------------------------------------------------------------- models and data


def _nan_model(src: Path, dst: Path, name: str, value: float) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(dst / "model.safetensors")
    sd[name] = sd[name].clone()
    sd[name].view(-1)[3] = value
    save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory, default_model_dir):
    """Tiny models on disk (with the default model's tokenizer so eval and search run), damaged
    copies, a deeper model whose scan and save take long enough to interrupt, and a task."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("cli")
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    d = {"root": root}
    # intermediate 1024: a (≥22)×1024 by 1024×32 product rounds differently with 1 and 2 threads
    tiny = make_tiny("llama", vocab_size=len(tok), num_hidden_layers=4, intermediate_size=1024)
    d["tiny"] = root / "tiny"
    tiny.save_pretrained(d["tiny"])
    tok.save_pretrained(d["tiny"])
    other = make_tiny("llama", vocab_size=len(tok), num_hidden_layers=2, seed=1)
    d["other"] = root / "other"
    other.save_pretrained(d["other"])
    deep = make_tiny(
        "llama",
        vocab_size=32000,
        hidden_size=256,
        intermediate_size=1024,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_hidden_layers=16,
    )
    d["deep"] = root / "deep"
    deep.save_pretrained(d["deep"])
    gate = "model.layers.1.mlp.gate_proj.weight"
    d["nan"] = _nan_model(d["tiny"], root / "nan", gate, float("nan"))
    d["inf"] = _nan_model(d["tiny"], root / "inf", gate, float("inf"))
    d["nan_out"] = _nan_model(d["tiny"], root / "nan_out", "model.norm.weight", float("nan"))
    d["trunc"] = root / "trunc"
    shutil.copytree(d["tiny"], d["trunc"])
    st = d["trunc"] / "model.safetensors"
    os.truncate(st, st.stat().st_size // 2)
    d["garbage_config"] = root / "garbage_config"
    shutil.copytree(d["tiny"], d["garbage_config"])
    (d["garbage_config"] / "config.json").write_text("{ this is not json")
    d["shards"] = root / "shards"
    tiny.save_pretrained(d["shards"], max_shard_size="3MB")
    tok.save_pretrained(d["shards"])
    shards = sorted(d["shards"].glob("model-*.safetensors"))
    assert len(shards) > 1
    d["bad_shard"] = shards[1].name
    raw = bytearray(shards[1].read_bytes())
    raw[8:40] = b"\x00corrupt-header-not-json-at-all!"
    shards[1].write_bytes(bytes(raw))
    rows = [
        {
            "prompt": f"Q: Is {i} even?\nA:",
            "choices": ["yes", "no"],
            "answer": "yes" if i % 2 == 0 else "no",
        }
        for i in range(40)
    ]
    d["task"] = root / "parity.jsonl"
    d["task"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    long_rows = [
        {
            "prompt": "Q: " + " ".join(["is this even?"] * 30) + f" {i}\nA:",
            "choices": ["yes", "no", "maybe"],
            "answer": "yes",
        }
        for i in range(3000)
    ]
    d["long_task"] = root / "long.jsonl"
    d["long_task"].write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    d["a_file"] = root / "a_file.txt"
    d["a_file"].write_text("keep me\n")
    # another model's finished scan, and an unrelated non-empty folder
    from laserkit.spectral.scan import scan

    d["other_scan"] = root / "other_scan"
    scan(str(d["other"]), d["other_scan"], progress=False, plots=False)
    d["stuff"] = root / "stuff"
    d["stuff"].mkdir()
    (d["stuff"] / "notes.md").write_text("mine\n")
    return d


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    """One user mistake: the command, what status and one-line message it must give, and the
    paths whose content must be unchanged afterwards."""

    name: str
    args: list
    rc: int
    says: tuple[str, ...]  # substrings of the one stderr line (case-insensitive)
    keep: list = field(default_factory=list)  # paths that must not change
    absent: list = field(default_factory=list)  # paths that must not appear
    fsize: int | None = None


def cases(d: dict) -> list[Case]:
    t, root = d["tiny"], d["root"]
    red = ["reduce", t, "--lname", "fc_in", "--lnum", "0", "--rate", "5"]
    return [
        # usage errors (click's message on one line, status 2)
        Case("unknown command", ["frobnicate"], 2, ("no such command", "frobnicate")),
        Case("missing option", ["reduce", t, "--lnum", "0"], 2, ("missing option", "--lname")),
        Case("rate not a number", [*red[:-1], "abc"], 2, ("--rate", "invalid value")),
        Case(
            "limit not a number",
            ["eval", t, "-t", d["task"], "--limit", "abc"],
            2,
            ("--limit", "invalid"),
        ),
        Case(
            "option without value",
            ["eval", t, "-t", d["task"], "--limit"],
            2,
            ("--limit", "requires an argument"),
        ),
        Case("unknown option", [*red, "--frobnicate"], 2, ("no such option", "--frobnicate")),
        # bad values (laserkit's own check, status 2)
        Case("rate out of range", [*red[:-1], "11"], 2, ("rate 11", "[0, 10]")),
        Case(
            "unknown lname",
            ["reduce", t, "--lname", "fc_banana", "--lnum", "0", "--rate", "5"],
            2,
            ("fc_banana", "fc_in"),
        ),
        Case(
            "layer out of range",
            ["reduce", t, "--lname", "fc_in", "--lnum", "9", "--rate", "5"],
            2,
            ("layer 9", "0..3"),
        ),
        Case(
            "unknown intervention",
            [*red, "--intervention", "magic"],
            2,
            ("magic", "rank-reduction"),
        ),
        Case(
            "unknown split",
            ["eval", t, "-t", d["task"], "--split", "train"],
            2,
            ("split", "validation"),
        ),
        Case("unknown table", ["scan", t, "--table", "wide"], 2, ("--table", "summary")),
        Case(
            "no tokens to generate",
            ["eval", t, "-t", d["task"], "--max-new-tokens", "0"],
            2,
            ("--max-new-tokens", "at least 1", "not 0"),
        ),
        Case(
            "missing model path",
            ["reduce", root / "nope" / "model", "--lname", "fc_in", "--lnum", "0", "--rate", "5"],
            2,
            ("does not exist",),
        ),
        Case("missing task file", ["eval", t, "-t", root / "nope.jsonl"], 2, ("nope",)),
        # bad output paths: refused before any work, the user's files untouched
        Case(
            "reduce --out is a file",
            [*red, "--out", d["a_file"]],
            2,
            ("a_file.txt", "is an existing file"),
            keep=[d["a_file"]],
        ),
        Case(
            "reduce --out not empty",
            [*red, "--out", d["stuff"]],
            2,
            ("stuff", "not empty", "--force"),
            keep=[d["stuff"]],
        ),
        Case(
            "eval --out is a file",
            ["eval", t, "-t", d["task"], "--out", d["a_file"]],
            2,
            ("a_file.txt", "is an existing file"),
            keep=[d["a_file"]],
        ),
        Case(
            "eval --out holds a model",
            ["eval", t, "-t", d["task"], "--out", d["other"]],
            2,
            ("holds other files",),
            keep=[d["other"]],
        ),
        Case(
            "scan --out is a file",
            ["scan", t, "--out", d["a_file"]],
            2,
            ("a_file.txt", "is an existing file"),
            keep=[d["a_file"]],
        ),
        Case(
            "scan --out holds another model's scan",
            ["scan", t, "--out", d["other_scan"]],
            2,
            ("another checkpoint", str(d["other"])),
            keep=[d["other_scan"]],
        ),
        Case(
            "scan --out holds unrelated files",
            ["scan", t, "--out", d["stuff"]],
            2,
            ("not empty", "no laserkit scan"),
            keep=[d["stuff"]],
        ),
        Case(
            "search --run-dir is a file",
            ["search", t, "--task", d["task"], "--run-dir", d["a_file"]],
            2,
            ("is an existing file",),
            keep=[d["a_file"]],
        ),
        Case(
            "search --run-dir holds other files",
            ["search", t, "--task", d["task"], "--run-dir", d["stuff"]],
            2,
            ("holds other files", "notes.md"),
            keep=[d["stuff"]],
        ),
        Case(
            "apply --out is a file",
            ["apply", root / "nowhere", "--out", d["a_file"]],
            2,
            ("is an existing file",),
            keep=[d["a_file"]],
        ),
        # damaged files: one line naming the file
        Case(
            "truncated safetensors (reduce)",
            ["reduce", d["trunc"], "--lname", "fc_in", "--lnum", "0", "--rate", "5"],
            2,
            ("truncated safetensors", "trunc/model.safetensors"),
        ),
        Case(
            "truncated safetensors (eval)",
            ["eval", d["trunc"], "-t", d["task"]],
            2,
            ("truncated safetensors", "trunc/model.safetensors"),
        ),
        Case(
            "corrupt shard (reduce)",
            ["reduce", d["shards"], "--lname", "fc_in", "--lnum", "0", "--rate", "5"],
            2,
            ("corrupt", d["bad_shard"]),
        ),
        Case(
            "corrupt shard (eval)",
            ["eval", d["shards"], "-t", d["task"]],
            2,
            ("corrupt", d["bad_shard"]),
        ),
        Case(
            "garbage config",
            ["reduce", d["garbage_config"], "--lname", "fc_in", "--lnum", "0", "--rate", "5"],
            2,
            ("garbage_config", "config"),
        ),
        # non-finite weights: one line naming the tensor, for every method that decomposes it
        Case(
            "NaN weight, SVD",
            ["reduce", d["nan"], "--lname", "fc_in", "--lnum", "1", "--rate", "5"],
            2,
            ("model.layers.1.mlp.gate_proj.weight", "nan or infinite"),
        ),
        Case(
            "inf weight, MP threshold",
            [
                "reduce",
                d["inf"],
                "--lname",
                "fc_in",
                "--lnum",
                "1",
                "--intervention",
                "mp-threshold",
            ],
            2,
            ("model.layers.1.mlp.gate_proj.weight", "nan or infinite"),
        ),
        Case(
            "NaN weight, Vendi",
            [
                "reduce",
                d["nan"],
                "--lname",
                "fc_in",
                "--lnum",
                "1",
                "--intervention",
                "vendi-score",
                "--rho",
                "0.5",
            ],
            2,
            ("model.layers.1.mlp.gate_proj.weight", "nan or infinite"),
        ),
        Case(
            "NaN outputs in eval",
            ["eval", d["nan_out"], "-t", d["task"], "--out", root / "nan_eval"],
            2,
            ("outputs are nan or infinite",),
            absent=[root / "nan_eval"],
        ),
        # a full disk (the file size limit makes the write fail): one line, nothing half-written
        Case(
            "disk full during save",
            [*red, "--out", root / "full_save"],
            1,
            ("cannot write", "full_save", "no space"),
            absent=[root / "full_save"],
            fsize=1 << 20,
        ),
        Case(
            "disk full during scan",
            ["scan", d["deep"], "--out", root / "full_scan", "--no-plot"],
            1,
            ("cannot write", "no space"),
            fsize=1500,
        ),
    ]


def check(case: Case, ran: Ran, before: dict) -> None:
    where = f"{case.name}: rc={ran.rc}\nstderr:\n{ran.err}"
    assert ran.rc == case.rc, where
    assert "Traceback" not in ran.err + ran.out, where
    assert len(ran.lines()) == 1, where
    line = ran.lines()[0]
    assert line.startswith("laserkit: error: "), where
    for s in case.says:
        assert str(s).lower() in line.lower(), f"{where}\n(missing {s!r})"
    for p, snap in before.items():
        assert snapshot(p) == snap, f"{case.name}: {p} changed"
    for p in case.absent:
        assert not Path(p).exists(), f"{case.name}: {p} was created"
    for p in {Path(p).parent for p in case.keep + case.absent}:
        _no_partials(p)


def test_help_and_usage_errors_of_the_installed_command(tmp_path):
    assert LASERKIT, "the laserkit console script is not installed"
    ran = laserkit()
    assert ran.rc == 0 and ran.err == "" and "Usage" in ran.out and "reduce" in ran.out
    ran = laserkit("reduce", "--help")
    assert ran.rc == 0 and "--lname" in ran.out and ran.err == ""


def test_table_of_user_mistakes(env):
    table = cases(env)
    assert len(table) >= 25
    befores = [{Path(p): snapshot(Path(p)) for p in c.keep} for c in table]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda c: laserkit(*c.args, cwd=env["root"], fsize=c.fsize), table))
    failures = []
    for c, ran, before in zip(table, runs, befores, strict=True):
        try:
            check(c, ran, before)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)
    full_scan = env["root"] / "full_scan"
    assert not (full_scan / "scan.json").exists()
    _no_partials(full_scan)


def _completed_trials(db: Path) -> int:
    """Trials the run's SQLite store holds as complete (0 while it does not exist yet)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # the schema is being created
        return 0


def _numbers(rows: list[dict]) -> list[dict]:
    """Trial rows without Optuna's trial numbers (which depend on who took which trial)."""
    return [{k: v for k, v in r.items() if k != "trial"} for r in rows]


def _one_interrupt_line(ran: Ran, *says: str) -> str:
    where = f"rc={ran.rc}\nstderr:\n{ran.err}"
    assert ran.rc == 130, where
    assert "Traceback" not in ran.err, where
    assert len(ran.lines()) == 1, where
    line = ran.lines()[0]
    assert line.startswith("laserkit: interrupted"), where
    for s in says:
        assert s in line, f"{where}\n(missing {s!r})"
    return line


_LOG_AFTER = """
import logging, signal, sqlite3, sys
from laserkit.cli import run
from laserkit.core import errors
run(["--help"])
print("--", file=sys.stderr)
def cursor():  # what SQLAlchemy logs when the interrupt has already closed the database
    try:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    except sqlite3.ProgrammingError:
        pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
        pool.error("Error closing cursor", exc_info=True)
cursor()
errors._interrupts.append(signal.SIGINT)
cursor()
logging.getLogger("laserkit").warning("laserkit: warning: still said")
"""


def test_library_log_records_are_one_line_and_quiet_after_an_interrupt():
    """A library's logged error reaches the terminal as one line without its traceback, and
    once the user has interrupted not at all (the interrupt's own line is the one line):
    SQLAlchemy logged "Error closing cursor" with a traceback when Ctrl-C landed while it read
    the trial store, after the interrupt line. laserkit's own warnings still show."""
    p = subprocess.run(
        [sys.executable, "-c", _LOG_AFTER], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    after = p.stderr.split("--\n", 1)[1]
    assert after == "Error closing cursor\nlaserkit: warning: still said\n", p.stderr


def test_interrupts_keep_what_was_done_and_continue(env, tmp_path):
    """SIGINT at a seeded random moment of scan, eval, search and save; then the work goes on."""
    from laserkit.spectral.scan import scan

    rng = random.Random(SEED)
    root = tmp_path
    deep, tiny = env["deep"], env["tiny"]

    # reference results, uninterrupted
    ref_scan = scan(str(deep), root / "ref_scan", progress=False, plots=False, threads=1)
    search_args = [
        "search",
        str(tiny),
        "--task",
        str(env["task"]),
        "--lname",
        "fc_in,fc_out",
        "--lnum",
        "all",
        "--rho",
        "0.5,0.1,0.01",
        "--batch-size",
        "8",
        "--no-save",
    ]
    earlier_eval = root / "earlier_eval"
    earlier_eval.mkdir()
    (earlier_eval / "summary.json").write_text('{"earlier": true}\n')
    (earlier_eval / "records.jsonl").write_text('{"id": "old"}\n')
    saved = root / "saved"

    def scan_job():
        # the scan of the small matrices after the first one is short: where the whole scan
        # ended before the signal came (a late moment on a busy machine), try again earlier
        pick = random.Random(rng.random())
        for attempt, delay in enumerate([(0.0, 0.1), (0.0, 0.01), (0.0, 0.0)]):
            out = root / f"scan{attempt or ''}"
            ran, wait = interrupted(
                ["scan", str(deep), "--out", str(out), "--no-plot", "--threads", "1"],
                lambda out=out: any((out / "matrices").glob("*.safetensors")),
                delay,
                random.Random(pick.random()),
            )
            if ran.rc != 0:
                break
        return out, ran

    def eval_job():
        # no marker to wait for: a random moment of the whole command, start-up included
        return interrupted(
            [
                "eval",
                str(tiny),
                "-t",
                str(env["long_task"]),
                "--batch-size",
                "2",
                "--out",
                str(earlier_eval),
            ],
            lambda: True,
            (0.5, 4.0),
            random.Random(rng.random()),
        )[0]

    def search_job():
        run_dir = root / "search"
        ran, _ = interrupted(
            [*search_args, "--run-dir", str(run_dir)],
            lambda: _completed_trials(run_dir / "trials.db") >= 2,
            (0.0, 0.15),
            random.Random(rng.random()),
        )
        return run_dir, ran

    def reference_search():
        return laserkit(*search_args, "--run-dir", root / "ref_search")

    def save_job():
        first = laserkit(
            "reduce", deep, "--lname", "fc_in", "--lnum", "0", "--rate", "5", "--out", saved
        )
        assert first.rc == 0, first.err
        before = snapshot(saved)
        ran, _ = interrupted(
            [
                "reduce",
                str(deep),
                "--lname",
                "fc_out",
                "--lnum",
                "0:",
                "--rate",
                "9",
                "--out",
                str(saved),
                "--force",
            ],
            lambda: any(root.glob(f".saved{PARTIAL}*")),
            (0.0, 0.01),
            random.Random(rng.random()),
        )
        return before, ran

    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = {
            k: pool.submit(f)
            for k, f in [
                ("scan", scan_job),
                ("eval", eval_job),
                ("search", search_job),
                ("save", save_job),
                ("ref_search", reference_search),
            ]
        }
        res = {k: j.result() for k, j in jobs.items()}

    # scan: finished matrices kept, nothing partial; scanning again reuses them and completes
    out, ran = res["scan"]
    _one_interrupt_line(ran, "the scan resumes", str(out))
    _no_partials(out)
    assert not (out / "scan.json").exists()
    kept = len(list((out / "matrices").glob("*.safetensors")))
    assert 1 <= kept < len(ref_scan.records)
    again = laserkit(
        "scan", deep, "--out", out, "--no-plot", "--table", "summary", "--threads", "1"
    )
    assert again.rc == 0, again.err
    assert f"({kept} reused" in again.err
    assert (
        json.loads((out / "scan.json").read_text())["matrices"]
        == json.loads((root / "ref_scan" / "scan.json").read_text())["matrices"]
    )

    # eval: the earlier results in --out are intact
    ran = res["eval"]
    _one_interrupt_line(ran)  # where it stopped is random: start-up, loading or scoring
    assert (earlier_eval / "summary.json").read_text() == '{"earlier": true}\n'
    assert (earlier_eval / "records.jsonl").read_text() == '{"id": "old"}\n'
    _no_partials(root)

    # search: finished trials kept, --resume completes with the same table as an uninterrupted run
    run_dir, ran = res["search"]
    _one_interrupt_line(ran, "--resume", str(run_dir))
    assert (run_dir / "trials.db").exists() and not (run_dir / "result.json").exists()
    ref = res["ref_search"]
    assert ref.rc == 0, ref.err
    resumed = laserkit(*search_args, "--run-dir", run_dir, "--resume")
    assert resumed.rc == 0, resumed.err
    a = json.loads((run_dir / "result.json").read_text())
    b = json.loads((root / "ref_search" / "result.json").read_text())
    assert _numbers(a["trials"]) == _numbers(b["trials"]) and len(a["trials"]) == 24
    assert a["chosen"]["label"] == b["chosen"]["label"]

    # save: the earlier model intact, no partial directory beside it
    before, ran = res["save"]
    _one_interrupt_line(ran, str(saved))
    assert snapshot(saved) == before
    _no_partials(root)


def test_saved_files_honour_the_umask(env, tmp_path):
    """umask 027 (not the common 022, so a hard-coded 0755/0644 would fail too): a saved model and
    an evaluation's results are rwxr-x--- / rw-r-----, not the 0700 / 0600 of temporary files."""
    mask, dmode, fmode = 0o027, 0o750, 0o640
    out, ev = tmp_path / "model", tmp_path / "eval"
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(
                lambda args: laserkit(*args, umask=mask),
                [
                    (
                        "reduce",
                        env["tiny"],
                        "--lname",
                        "fc_in",
                        "--lnum",
                        "0",
                        "--rate",
                        "5",
                        "--out",
                        out,
                    ),
                    ("eval", env["tiny"], "-t", env["task"], "--limit", "5", "--out", ev),
                ],
            )
        )
    assert all(r.rc == 0 for r in runs), [r.err for r in runs]
    for folder in (out, ev):
        assert folder.stat().st_mode & 0o777 == dmode
        files = list(folder.iterdir())
        assert files and all(f.stat().st_mode & 0o777 == fmode for f in files), [
            (f.name, oct(f.stat().st_mode)) for f in files
        ]


def test_workers_do_not_change_the_numbers(env, tmp_path):
    """--workers 2 on a CPU gives bit for bit what one worker gives (the model's 1024-wide
    down-projection rounds differently with 1 and 2 threads, so this fails if workers get
    fewer threads than one process)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the thread count cannot differ")
    args = [
        "search",
        env["tiny"],
        "--task",
        env["task"],
        "--lname",
        "fc_in,fc_out",
        "--lnum",
        "2,3",
        "--rho",
        "0.5,0.05",
        "--batch-size",
        "8",
        "--no-save",
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = pool.map(
            lambda w: laserkit(*args, "--workers", str(w), "--run-dir", tmp_path / f"w{w}"), (1, 2)
        )
    assert one.rc == 0 and two.rc == 0, one.err + two.err
    a = json.loads((tmp_path / "w1" / "result.json").read_text())
    b = json.loads((tmp_path / "w2" / "result.json").read_text())
    assert _numbers(a["trials"]) == _numbers(b["trials"]) and len(a["trials"]) == 8
    assert a["chosen"]["key"] == b["chosen"]["key"]
    for part in ("base", "best"):
        for split in ("validation", "test"):
            x, y = a[part][split], b[part][split]
            assert (x["accuracy"], x["log_loss"]) == (y["accuracy"], y["log_loss"])


def test_an_interrupt_during_an_import_is_raised_after_it(tmp_path):
    """A SIGTERM/SIGINT that lands while a module is being imported is raised once the import is
    over: raised inside it, an extension's initialiser that called back into Python (torch's
    pybind11 code) aborts the process with status -6 and no cleanup (seen in CI)."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "t = time.monotonic()\n"
        "while time.monotonic() - t < 0.3:\n"
        "    pass\n"
        "done = True\n"
    )
    script = (
        "import signal, sys, time\n"
        "from laserkit.core.errors import interrupt_handler, terminated\n"
        "signal.signal(signal.SIGTERM, interrupt_handler)\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "try:\n"
        "    import slow_module\n"
        "    time.sleep(5)\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    mod = sys.modules.get('slow_module')\n"
        "    print('after import' if getattr(mod, 'done', False) else 'inside import',\n"
        "          'terminated' if terminated() else 'not terminated')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["after", "import", "terminated"], r.stdout + r.stderr


def test_a_sigterm_after_the_work_is_done_leaves_its_status():
    """A SIGTERM that arrives once the command has finished, while the interpreter tears down
    (a big model's teardown takes a while; Python has put back the default action by then),
    does not replace the command's status: the work is done. Seen in CI as status -15 after
    "saved"."""
    script = (
        "import sys, time\n"
        "class Slow:\n"
        "    def __del__(self):\n"
        "        sys.stderr.write('teardown\\n'); sys.stderr.flush(); time.sleep(3)\n"
        "slow = Slow()  # freed with __main__, after Python stopped handling signals\n"
        "sys.argv = ['laserkit']\n"
        "from laserkit.cli import main\n"
        "main()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    assert p.stderr is not None and p.stderr.readline() == "teardown\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert "Usage" in out
    assert p.returncode == 0, err  # -15 when the default action killed the finished process
