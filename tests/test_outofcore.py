"""Out-of-core edits: the tensors written equal bit for bit those of the in-memory save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from safetensors import safe_open

from laserkit import Editor, Intervention, LaserkitError, save
from laserkit.edit.ondisk import edit_checkpoint


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k)
    return out


def _checkpoint(tmp_path: Path, family: str, dtype: torch.dtype, shard: str | None) -> Path:
    model = make_tiny(family).to(dtype)
    folder = tmp_path / f"{family}-src"
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kw)
    return folder


STEPS = {
    "llama": [
        ("fc_in", "0,2", Intervention(rho=0.25)),
        ("mlp", -1, Intervention(rho=0.1)),
        ("fc_in", 0, Intervention(kind="mp-threshold")),  # composes on an edited matrix
        ("attn", 1, Intervention(kind="vendi-score", rho=0.5)),
    ],
    "gpt2": [
        ("k_proj", 1, Intervention(rho=0.2)),
        ("q_proj", 1, Intervention(rho=0.5)),
        ("fc_in", "all", Intervention(rho=0.1)),
    ],
    "falcon": [("v_proj", 0, Intervention(rho=0.3)), ("fc_out", 2, Intervention(rho=0.05))],
}


@pytest.mark.parametrize(
    ("family", "dtype", "shard"),
    [
        ("llama", torch.float32, "20KB"),
        ("llama", torch.bfloat16, None),
        ("gpt2", torch.float32, None),
        ("falcon", torch.float16, "30KB"),
    ],
)
def test_out_of_core_equals_in_memory_save_bit_for_bit(tmp_path, family, dtype, shard, one_thread):
    src = _checkpoint(tmp_path, family, dtype, shard)
    # in memory, at the stored dtype
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    ed = Editor(model)
    for lname, lnum, iv in STEPS[family]:
        ed.apply(lname, lnum, iv)
    save(model, None, tmp_path / "mem", ed.records, base=str(src))
    records, out = edit_checkpoint(str(src), STEPS[family], tmp_path / "ooc")
    mem, ooc, orig = _tensors(tmp_path / "mem"), _tensors(out), _tensors(src)
    assert set(mem) <= set(ooc) == set(orig)
    changed = 0
    for name, t in ooc.items():
        ref = mem.get(name, orig[name])
        assert t.dtype == ref.dtype and torch.equal(t.view(torch.uint8), ref.view(torch.uint8)), (
            name
        )
        changed += not torch.equal(t, orig[name])
    assert changed == len({r["module"] for r in ed.records})
    assert json.loads((out / "laserkit.json").read_text())["interventions"] == json.loads(
        json.dumps([r.to_json() for r in ed.records])
    )
    assert json.loads(json.dumps([r.to_json() for r in records])) == json.loads(
        json.dumps([r.to_json() for r in ed.records])
    )
    assert (out / "README.md").read_text() == (tmp_path / "mem" / "README.md").read_text()


def test_unedited_shards_are_copied_never_linked(tmp_path):
    """Unedited shards are byte copies (a reflink where offered), never hard links: a later
    edit or chmod of the saved copy must not reach the source."""
    src = _checkpoint(tmp_path, "llama", torch.float32, "20KB")
    shards = sorted(src.glob("*.safetensors"))
    assert len(shards) > 3
    before = {
        p.name: (p.stat().st_ino, p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
        for p in src.iterdir()
    }
    _, out = edit_checkpoint(str(src), [("fc_out", -1, Intervention(rho=0.1))], tmp_path / "o")
    assert not any(
        os.path.samefile(p, out / p.name) for p in src.iterdir() if (out / p.name).exists()
    )
    same = [s for s in shards if (out / s.name).read_bytes() == s.read_bytes()]
    assert len(same) == len(shards) - 1  # every shard but the one holding layer 11's down_proj
    assert (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert all((out / p.name).stat().st_nlink == 1 for p in src.iterdir())
    after = {
        p.name: (p.stat().st_ino, p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
        for p in src.iterdir()
    }
    assert after == before


def test_cli_reduce_routes_a_local_checkpoint_out_of_core(tmp_path):
    """The installed command on a local directory writes the same model without building it."""
    src = _checkpoint(tmp_path, "llama", torch.float32, None)
    exe = Path(sys.executable).with_name("laserkit")
    r = subprocess.run(
        [
            str(exe),
            "reduce",
            str(src),
            "--lname",
            "fc_in",
            "--lnum",
            "-1",
            "--rho",
            "0.1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    assert "out of core" in r.stderr
    got = _tensors(tmp_path / "o")["model.layers.11.mlp.gate_proj.weight"]
    assert torch.linalg.matrix_rank(got) == 3  # ⌊32·0.1⌋


def test_unknown_lname_is_the_same_one_line_error(tmp_path):
    src = _checkpoint(tmp_path, "llama", torch.float32, None)
    with pytest.raises(LaserkitError, match="unknown layer name 'fc_mid'"):
        edit_checkpoint(str(src), [("fc_mid", 0, Intervention(rho=0.1))], tmp_path / "o")
    assert not (tmp_path / "o").exists()
