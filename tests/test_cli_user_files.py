"""The user's model files, through the INSTALLED ``laserkit`` command: never changed, never run.

Each row snapshots the source before and after (bytes hash, mode, mtime and inode of every file,
symlinks as links) and checks that no partial file is left: an output must never be the source,
share an inode with it, or run its code. Layouts are built here: a Hugging Face cache snapshot
(``snapshots/<rev>/`` of ``../../blobs/<hash>`` symlinks), a Trainer output folder, a directory
with its own ``configuration_*.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_tiny

from laserkit.core.fileio import partial_files

BIN = Path(sys.prefix) / "bin" / "laserkit"
LASERKIT = str(BIN) if BIN.exists() else shutil.which("laserkit")
REDUCE = ["--lname", "fc_in", "--lnum", "-1", "--rho", "0.5"]


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASERKIT_DEBUG")}
    env.update(OMP_WAIT_POLICY="PASSIVE", LASERKIT_CACHE=str(tmp / "lk-cache"), COLUMNS="200")
    return env


def run(
    tmp: Path, *args, stdin: str | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LASERKIT, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(tmp),
        input=stdin,
        cwd=cwd,
        timeout=timeout,
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """(sha256, mode, mtime_ns, inode, link target) of every entry under ``root`` (lstat)."""
    out = {}
    for p in sorted([root, *root.rglob("*")]) if root.is_dir() else [root]:
        st = p.lstat()
        link = os.readlink(p) if p.is_symlink() else None
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not link else None
        out[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns, st.st_ino, link)
    return out


def one_error(r: subprocess.CompletedProcess, status: int = 2) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == status, r.stderr
    assert len(lines) == 1 and lines[0].startswith("laserkit: error: "), r.stderr
    assert "Traceback" not in r.stderr and "\x1b" not in r.stderr
    return lines[0]


def no_partials(*folders: Path) -> None:
    for f in folders:
        assert partial_files(f) == [], f"partial files left in {f}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny llama with a tokenizer-less config, saved as safetensors in two shards."""
    root = tmp_path_factory.mktemp("tiny")
    folder = root / "tiny"
    make_tiny("llama").save_pretrained(folder, max_shard_size="60KB")
    os.chmod(folder / "config.json", 0o600)  # a private file must stay private
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- source == output


@pytest.mark.parametrize("how", ["same", "inside", "contains", "same-in-memory", "symlink"])
def test_output_on_inside_or_around_the_source_is_refused(tiny, tmp_path, how):
    src = _copy(tiny, tmp_path / "m" / "src")
    link = tmp_path / "alias"
    link.symlink_to(src)
    out = {
        "same": src,
        "inside": src / "edited",
        "contains": tmp_path / "m",
        "same-in-memory": src,
        "symlink": link,
    }[how]
    extra = ["--in-memory"] if how == "same-in-memory" else []
    before = snapshot(tmp_path / "m")
    line = one_error(run(tmp_path, "reduce", src, *REDUCE, "--out", out, "--force", *extra))
    assert "source model" in line
    assert snapshot(tmp_path / "m") == before
    no_partials(tmp_path)


def test_gguf_out_on_itself_is_refused(tmp_path):
    from test_gguf_convert import write_gguf

    path = tmp_path / "x.gguf"
    write_gguf("llama", path)
    before = snapshot(path)
    line = one_error(run(tmp_path, "reduce", path, *REDUCE, "--out", path, "--force"))
    assert "is the source model" in line
    assert snapshot(path) == before
    no_partials(tmp_path)


@pytest.mark.parametrize("out", ["/", "", "."])
def test_out_root_empty_or_cwd_with_force_is_refused(tiny, tmp_path, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine\n")
    src = _copy(tiny, tmp_path / "src")
    before, mine = snapshot(src), snapshot(work)
    line = one_error(run(tmp_path, "reduce", src, *REDUCE, "--out", out, "--force", cwd=work))
    assert "--out" in line
    assert snapshot(src) == before and snapshot(work) == mine


# ----------------------------------------------------------------------------- what is written


def test_hf_cache_snapshot_gives_real_files_that_load(tiny, tmp_path):
    repo = tmp_path / "hub" / "models--me--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    src = _copy(tiny, tmp_path / "plain")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(_gpt2_tokenizer(tmp_path)).save_pretrained(src)
    for p in src.iterdir():
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copyfile(p, blobs / digest)
        (snap / p.name).symlink_to(Path("..", "..", "blobs", digest))
    before = snapshot(repo)
    out = tmp_path / "out"
    r = run(tmp_path, "reduce", snap, *REDUCE, "--out", out)
    assert r.returncode == 0, r.stderr
    files = sorted(out.iterdir())
    assert files and not [p for p in files if p.is_symlink()]
    assert {p.name for p in files} >= {p.name for p in src.iterdir()}
    for p in files:
        assert p.stat().st_nlink == 1
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # loads: nothing dangles
    assert AutoTokenizer.from_pretrained(out).vocab_size > 0
    assert snapshot(repo) == before
    no_partials(tmp_path)


def _gpt2_tokenizer(tmp: Path) -> Path:
    """A small byte-level BPE tokenizer saved as files (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp / "tok"
    vocab = {chr(c): i for i, c in enumerate(range(33, 33 + 120))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="!").save_pretrained(folder)
    return folder


def _trainer_folder(tiny: Path, root: Path) -> Path:
    """What transformers' Trainer leaves in output_dir: the model plus training state."""
    src = _copy(tiny, root / "trainer-out")
    (src / "checkpoint-100").mkdir()
    shutil.copyfile(tiny / "config.json", src / "checkpoint-100" / "config.json")
    torch.save({"state": {}}, src / "optimizer.pt")
    torch.save({"lr": [0.1]}, src / "scheduler.pt")
    import argparse

    torch.save(argparse.Namespace(learning_rate=1e-4), src / "training_args.bin")
    (src / "trainer_state.json").write_text(json.dumps({"global_step": 100}))
    (src / "runs").mkdir()
    (src / "runs" / "events.out.tfevents.1").write_bytes(b"\0" * 64)
    _copy(tiny, src / "earlier-edit")  # an earlier output saved inside it
    return src


def test_out_of_core_output_holds_exactly_the_model(tiny, tmp_path):
    src = _trainer_folder(tiny, tmp_path)
    before = snapshot(src)
    out = tmp_path / "out"
    r = run(tmp_path, "reduce", src, *REDUCE, "--out", out)
    assert r.returncode == 0, r.stderr
    model = {p.name for p in tiny.iterdir()}
    assert {p.name for p in out.iterdir()} == model | {"laserkit.json", "README.md"}
    assert snapshot(src) == before
    assert (src / "config.json").stat().st_mode & 0o777 == 0o600  # the source keeps its mode
    no_partials(tmp_path)


def test_trainer_bin_folder_reads_only_weight_files(tmp_path):
    """pytorch_model.bin beside training_args.bin (a pickle weights_only refuses): the scan
    reads the weights and ignores the rest, instead of refusing the whole checkpoint."""
    model = make_tiny("llama")
    src = tmp_path / "bin-trainer"
    model.save_pretrained(src, safe_serialization=False)
    for p in src.glob("*.safetensors"):  # transformers 5 may write safetensors regardless
        p.unlink()
    if not (src / "pytorch_model.bin").exists():
        torch.save(model.state_dict(), src / "pytorch_model.bin")
    import argparse

    torch.save(argparse.Namespace(learning_rate=1e-4), src / "training_args.bin")
    before = snapshot(src)
    r = run(tmp_path, "scan", src, "--types", "fc_in", "--lowest", "0")
    assert r.returncode == 0, r.stderr
    assert "training_args" not in r.stderr
    assert snapshot(src) == before


def test_bin_refused_by_weights_only_is_one_line(tiny, tmp_path):
    import argparse

    src = tmp_path / "pickled"
    src.mkdir()
    shutil.copyfile(tiny / "config.json", src / "config.json")
    sd = make_tiny("llama").state_dict()
    sd["extra"] = argparse.Namespace(x=1)  # an object torch.load(weights_only=True) refuses
    torch.save(sd, src / "pytorch_model.bin")
    before = snapshot(src)
    line = one_error(run(tmp_path, "targets", src))
    assert "weights_only" in line and str(src) in line
    assert snapshot(src) == before


# ----------------------------------------------------------------------------- their code


def _remote_code_dir(tiny: Path, root: Path) -> tuple[Path, Path]:
    src = _copy(tiny, root / "custom")
    marker = root / "MARKER"
    (src / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\n\n\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (src / "config.json").write_text(json.dumps(config))
    return src, marker


@pytest.mark.parametrize(
    "command",
    [
        ["scan", "{src}", "--out", "{tmp}/s"],
        ["eval", "{src}", "--task", "{tmp}/t.jsonl", "--dry-run", "--chat-template", "model"],
        ["reduce", "{src}", *REDUCE, "--out", "{tmp}/o"],
        ["targets", "{src}"],
    ],
)
def test_a_models_own_code_never_runs_unasked(tiny, tmp_path, command):
    src, marker = _remote_code_dir(tiny, tmp_path)
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"prompt": "Q", "choices": ["a", "b"], "answer": "a"}) + "\n"
    )
    args = [a.format(src=src, tmp=tmp_path) for a in command]
    before = snapshot(src)
    r = run(tmp_path, *args, stdin="y\n" * 50)  # `yes y | laserkit ...`
    line = one_error(r)
    assert "configuration_evil.py" in line and "--trust-remote-code" in line
    assert not marker.exists()
    assert "[y/N]" not in r.stdout + r.stderr
    assert snapshot(src) == before
    no_partials(tmp_path)


def test_trust_remote_code_is_an_option_of_every_model_command(tmp_path):
    for command in (
        "reduce",
        "targets",
        "eval",
        "scan",
        "search",
        "greedy",
        "compose",
        "worker",
        "apply",
        "compare",
    ):
        r = run(tmp_path, command, "--help")
        assert "--trust-remote-code" in r.stdout, command


# ----------------------------------------------------------------------------- bad inputs


def test_model_without_tokenizer_files_is_one_line(tiny, tmp_path):
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"prompt": "Q", "choices": ["a", "b"], "answer": "a"}) + "\n"
    )
    for args in (
        ["eval", tiny, "--task", tmp_path / "t.jsonl"],
        ["eval", "default", "--task", tmp_path / "t.jsonl", "--compare", tiny],
        ["search", tiny, "--task", tmp_path / "t.jsonl", "--run-dir", tmp_path / "r"],
    ):
        line = one_error(run(tmp_path, *args))
        assert "no tokenizer files" in line and str(tiny) in line
    assert not (tmp_path / "r").exists()


def test_non_utf8_model_path_is_named_as_such(tiny, tmp_path):
    odd = os.fsencode(tmp_path) + b"/mod\xffel"
    shutil.copytree(tiny, odd.decode(errors="surrogateescape"))
    r = subprocess.run(
        [os.fsencode(LASERKIT), b"scan", odd], capture_output=True, env=_env(tmp_path), timeout=300
    )
    r = subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode(), r.stderr.decode(errors="replace")
    )
    line = one_error(r)
    assert "not valid UTF-8" in line and "damaged" not in line


def test_unwritable_destination_is_status_1_as_the_readme_says(tiny, tmp_path, monkeypatch, capsys):
    """Root writes anywhere, so the read-only mount is stood in for by os.access."""
    from laserkit.cli import run as cli_run

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    assert cli_run(["reduce", str(tiny), *REDUCE, "--out", str(ro / "edited")]) == 1
    assert not any(ro.iterdir())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only or no permission" in err
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "1 when the file system refuses a write" in readme and "read-only" in readme


# ----------------------------------------------------------------------------- signals, partials


def test_stale_partials_of_the_target_are_swept(tiny, tmp_path):
    src = _copy(tiny, tmp_path / "src")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}-x1"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    live = tmp_path / f".out.partial-{os.getpid()}-x2"  # this process is alive: kept
    live.mkdir()
    other = tmp_path / ".other.partial-1-x3"  # another target's: not ours to judge
    other.mkdir()
    r = run(tmp_path, "reduce", src, *REDUCE, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists() and other.exists()


def test_sigterm_is_handled_like_ctrl_c(tiny, tmp_path):
    """SIGTERM at several moments of a save: one line, status 143, no partial left; an output
    either complete or absent."""
    src = _copy(tiny, tmp_path / "src")
    before = snapshot(src)
    statuses = []
    for i, delay in enumerate((0.5, 3.0, 6.0, 9.0)):
        out = tmp_path / f"out{i}"
        p = subprocess.Popen(
            [LASERKIT, "reduce", str(src), *REDUCE, "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path),
        )
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=300)
        statuses.append(p.returncode)
        if p.returncode == 143:
            lines = [ln for ln in err.splitlines() if ln.strip()]  # progress lines may precede
            assert "terminated" in lines[-1] and sum("terminated" in ln for ln in lines) == 1, err
            assert "Traceback" not in err
        else:
            assert p.returncode == 0, err  # it finished before the signal
        if out.exists():
            from laserkit.io.save import check_saved_model

            check_saved_model(out)
        no_partials(tmp_path)
    assert 143 in statuses
    assert snapshot(src) == before


def test_gguf_cache_files_are_copied_into_outputs_and_never_touched(tmp_path):
    """config.json, tokenizer and generation config of the GGUF's cached conversion are copies
    in a saved output (link count 1, other inodes), and using the cache again changes none of
    its files (the LRU stamp lies beside the conversion)."""
    from test_gguf_convert import write_gguf

    path = tmp_path / "tiny.gguf"
    write_gguf("llama", path)
    r = run(tmp_path, "reduce", path, *REDUCE, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    conv = [d for d in (tmp_path / "lk-cache" / "gguf").iterdir() if d.is_dir()]
    assert len(conv) == 1
    cached = snapshot(conv[0])
    time.sleep(0.05)
    r = run(tmp_path, "reduce", path, *REDUCE, "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert snapshot(conv[0]) == cached
    for out in (tmp_path / "a", tmp_path / "b"):
        for name in ("config.json", "generation_config.json", "tokenizer.json"):
            p = out / name
            assert p.stat().st_nlink == 1
            assert p.stat().st_ino != (conv[0] / name).stat().st_ino
            assert p.read_bytes() == (conv[0] / name).read_bytes()
    no_partials(tmp_path)


def test_apply_onto_its_own_base_model_is_refused(tmp_path, default_model_dir):
    """`apply RUN --out BASE --force` would replace the run's base model with its edit."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    base = tmp_path / "base"
    make_tiny("llama", vocab_size=len(tok), num_hidden_layers=2).save_pretrained(base)
    tok.save_pretrained(base)
    run_dir = tmp_path / "run"
    r = run(
        tmp_path,
        "search",
        base,
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--lname",
        "fc_in",
        "--lnum",
        "-1",
        "--rho",
        "0.5",
        "--run-dir",
        run_dir,
        "--no-save",
        "--device",
        "cpu",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    before = snapshot(base)
    for out in (base, base / "edited", tmp_path):
        line = one_error(run(tmp_path, "apply", run_dir, "--out", out, "--force"))
        assert "source model" in line
    assert snapshot(base) == before
    no_partials(tmp_path)
