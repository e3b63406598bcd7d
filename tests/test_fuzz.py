"""A bounded fuzz campaign (issue 18): random bytes and mutations of valid safetensors files,
GGUF files, task files (YAML, JSONL, CSV) and --lnum / --rho strings, fed to laserkit's own
parsing entry points. Every input must either parse or end in ONE LaserkitError line: never
another exception (an internal error), a hang (each example has a deadline) or a traceback.
A few cases go through the installed command (exit 2, one line on stderr).

Deterministic and bounded for CI: hypothesis derandomized (a fixed seed, no example database),
a fixed number of examples per target, a deadline per example (30 s: a hang is caught, a
loaded CI machine is not mistaken for one)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laserkit.core.errors import LaserkitError
from laserkit.tasks.sources import load_examples

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=30),
    max_examples=60,
    suppress_health_check=list(HealthCheck),
)
BIN = Path(sys.prefix) / "bin" / "laserkit"
LASERKIT = str(BIN) if BIN.exists() else shutil.which("laserkit")
_names = itertools.count()
_WORK = Path(tempfile.mkdtemp(prefix="laserkit-fuzz-"))


def one_error_or_nothing(fn) -> None:
    """Run ``fn``: it may succeed, or raise a LaserkitError whose message is one line."""
    try:
        fn()
    except LaserkitError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))


def fresh(suffix: str, data: bytes) -> Path:
    """A new file (a new name each time: nothing cached by path is reused)."""
    folder = _WORK / f"case{next(_names)}"
    folder.mkdir()
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


def mutate(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """``base`` with bytes overwritten at (position, value) and optionally truncated."""
    out = bytearray(base)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8)
CUT = st.none() | st.integers(0, 4096)


# -- safetensors ---------------------------------------------------------------------------


def _safetensors() -> bytes:
    from safetensors.torch import save

    return save(
        {
            "model.layers.0.mlp.down_proj.weight": torch.arange(12.0).reshape(3, 4),
            "model.norm.weight": torch.ones(4, dtype=torch.bfloat16),
        }
    )


SAFETENSORS = _safetensors()
HEADER_LEN = 8 + struct.unpack("<Q", SAFETENSORS[:8])[0]


def read_safetensors(data: bytes) -> None:
    from laserkit.io.checkpoint import SafetensorsCheckpoint

    path = fresh(".safetensors", data)
    ckpt = SafetensorsCheckpoint(path.parent)
    for name in ckpt.shapes():
        ckpt.get(name)


@FUZZ
@given(st.binary(max_size=512))
def test_safetensors_random_bytes(data):
    one_error_or_nothing(lambda: read_safetensors(data))


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, HEADER_LEN - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    CUT,
)
def test_safetensors_header_mutations(edits, cut):
    one_error_or_nothing(lambda: read_safetensors(mutate(SAFETENSORS, edits, cut)))


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_safetensors_header_json_values(value):
    """A well-framed file whose header is any JSON value (or an entry holding one)."""
    for header in (
        value,
        {"w": value},
        {"w": {"dtype": "F32", "shape": value, "data_offsets": [0, 4]}},
    ):
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + b"\0" * 16
        one_error_or_nothing(lambda d=data: read_safetensors(d))


# -- GGUF ----------------------------------------------------------------------------------


def _gguf() -> bytes:
    import gguf

    path = _WORK / "valid.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(32)
    w.add_embedding_length(4)
    w.add_feed_forward_length(8)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tensor("blk.0.ffn_down.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


GGUF = _gguf()


def read_gguf(data: bytes) -> None:
    from laserkit.io.open import open_checkpoint

    ckpt = open_checkpoint(fresh(".gguf", data))
    for name in ckpt.shapes():
        ckpt.get(name)


@FUZZ
@given(st.binary(max_size=512))
def test_gguf_random_bytes(data):
    one_error_or_nothing(lambda: read_gguf(b"GGUF" + data))


@settings(FUZZ, max_examples=40)
@given(st.lists(st.tuples(st.integers(4, 400), st.integers(0, 255)), min_size=1, max_size=6), CUT)
def test_gguf_header_mutations(edits, cut):
    one_error_or_nothing(lambda: read_gguf(mutate(GGUF, edits, cut)))


# -- task files ------------------------------------------------------------------------------

TASK_YAML = (
    b'kind: generate\ndata: data.jsonl\nprompt: "Q: {question}\\nA:"\n'
    b"answer: answer\nmatch: all_parts\nmax_new_tokens: 4\n"
)
RECORDS = [
    {"id": "a", "question": "where?", "answer": "here"},
    {"id": "b", "question": "who?", "answer": ["me", "you"]},
]
JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
CSV = b'prompt,choices,answer\nIs it?,"[""yes"", ""no""]",yes\n'


def read_task(name: str, data: bytes, extra: dict[str, bytes] | None = None) -> None:
    from laserkit.tasks import get_task

    path = fresh(Path(name).suffix, data)
    path.rename(path.with_name(name))
    for other, content in (extra or {}).items():
        (path.parent / other).write_bytes(content)
    task = get_task(str(path.with_name(name)))
    load_examples(task)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_task_yaml_random(data):
    one_error_or_nothing(lambda: read_task("t.yaml", data, {"data.jsonl": JSONL}))


@FUZZ
@given(EDITS, CUT)
def test_task_yaml_mutations(edits, cut):
    one_error_or_nothing(
        lambda: read_task("t.yaml", mutate(TASK_YAML, edits, cut), {"data.jsonl": JSONL})
    )


@FUZZ
@given(EDITS, CUT)
def test_jsonl_data_mutations(edits, cut):
    one_error_or_nothing(
        lambda: read_task("t.yaml", TASK_YAML, {"data.jsonl": mutate(JSONL, edits, cut)})
    )


@FUZZ
@given(st.binary(max_size=300) | st.just(b"prompt,answer\n").map(lambda h: h + b'a,"' * 3))
def test_bare_data_files_random(data):
    for name in ("d.jsonl", "d.json", "d.csv"):
        one_error_or_nothing(lambda n=name: read_task(n, data))


@FUZZ
@given(EDITS, CUT)
def test_csv_mutations(edits, cut):
    one_error_or_nothing(lambda: read_task("d.csv", mutate(CSV, edits, cut)))


# -- option strings --------------------------------------------------------------------------

OPTION_TEXT = st.text(alphabet="0123456789-:,. allnaif+e", max_size=20) | st.text(max_size=20)


@settings(FUZZ, max_examples=300)
@given(OPTION_TEXT)
def test_lnum_strings(text):
    from laserkit.model.targets import parse_layers

    def parse():
        layers = parse_layers(text, 12)
        assert all(isinstance(i, int) and 0 <= i < 12 for i in layers), layers

    one_error_or_nothing(parse)


@settings(FUZZ, max_examples=300)
@given(OPTION_TEXT)
def test_rho_strings(text):
    from laserkit.search.config import parse_rhos

    def parse():
        rhos = parse_rhos(text, None)
        assert all(0.0 <= r <= 1.0 for r in rhos), rhos

    one_error_or_nothing(parse)


# -- through the installed command -----------------------------------------------------------


def test_installed_command_on_fuzzed_files(tmp_path):
    """A few seeded hostile files through the console script: exit 2 and one line each."""
    rng = np.random.default_rng(18)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(mutate(SAFETENSORS, [(9, 0x7B), (12, 0xFF)], None))
    (tmp_path / "x.gguf").write_bytes(
        mutate(GGUF, [(int(p), int(v)) for p, v in rng.integers(4, 256, (4, 2))], None)
    )
    (tmp_path / "t.yaml").write_bytes(mutate(TASK_YAML, [(17, 0x5B)], None))
    (tmp_path / "data.jsonl").write_bytes(JSONL)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [
        ("scan", str(model), "--out", "s"),
        ("scan", "x.gguf", "--out", "g"),
        ("eval", "default", "--task", "t.yaml", "--dry-run"),
        ("search", "default", "--task", "t.yaml", "--rho", "0.1,,nan", "--run-dir", "r"),
    ]
    procs = [
        subprocess.Popen(
            [LASERKIT, *c],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in cases
    ]
    for case, p in zip(cases, procs, strict=True):
        out, err = p.communicate(timeout=300)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1, (case, p.returncode, err[-2000:])
        assert lines[0].startswith("laserkit: error: "), (case, lines)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module", autouse=True)
def _warm_and_clean():
    """Imports made on first use (transformers' GGUF tables, the task readers) happen here,
    outside the per-example deadline; the fuzzed files are removed at the end."""
    read_gguf(GGUF)
    read_task("t.yaml", TASK_YAML, {"data.jsonl": JSONL})
    yield
    shutil.rmtree(_WORK, ignore_errors=True)
