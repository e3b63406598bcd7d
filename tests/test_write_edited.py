"""edit/write.py: one rule picks how an edited model is written (GGUF by the output's suffix,
out of core for a local safetensors checkpoint, else load-edit-save), and every route writes the
tensors the Editor computes on the model transformers loads."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file
from test_cli_user_files import one_error, run

from laserkit import Editor, Intervention, LaserkitError
from laserkit.edit.write import is_gguf, write_edited
from laserkit.io.load import load

STEPS = [("fc_in", -1, Intervention(rho=0.5)), ("q_proj", 0, Intervention(rho=0.25))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("write") / "tiny"
    make_tiny("llama").save_pretrained(folder)
    return folder


def tensors(folder) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for p in sorted(folder.glob("*.safetensors")):
        out.update(load_file(p))
    return out


def reference(folder) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The Editor on the model transformers loads itself, step by step."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    editor = Editor(model)
    for lname, lnum, iv in STEPS:
        editor.apply(lname, lnum, iv)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, editor.records


def same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got and set(got) <= set(want)
    for name, t in got.items():
        assert torch.equal(t, want[name]), name


def ranks(records: list[dict]) -> list[tuple]:
    return [(r["lname"], r["layer"], r["module"], r["rank"]) for r in records]


def test_gguf_suffix():
    from pathlib import Path

    assert is_gguf("m.gguf") and is_gguf(Path("a/m.gguf"))
    assert not is_gguf(None) and not is_gguf("m.gguf/out") and not is_gguf("gguf")


def test_a_local_checkpoint_is_edited_out_of_core_as_the_editor_does(tiny, tmp_path):
    done = write_edited(str(tiny), STEPS, tmp_path / "o")
    want, records = reference(tiny)
    assert done.out_of_core and done.path == tmp_path / "o" and done.source == str(tiny)
    same_tensors(tensors(done.path), want)
    assert ranks(done.records) == ranks(records) and len(records) == 2


def test_in_memory_and_bin_routes_write_the_same_tensors(tiny, tmp_path):
    want, records = reference(tiny)
    mem = write_edited(str(tiny), STEPS, tmp_path / "m", in_memory=True)
    assert not mem.out_of_core
    same_tensors(tensors(mem.path), want)
    bin_dir = tmp_path / "bin"
    model = make_tiny("llama")  # the same weights
    model.config.save_pretrained(bin_dir)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    done = write_edited(str(bin_dir), STEPS, tmp_path / "b")
    assert not done.out_of_core  # .bin weights: loaded, edited, saved
    same_tensors(tensors(done.path), want)
    assert ranks(mem.records) == ranks(done.records) == ranks(records)


def test_a_loaded_model_is_used_and_given_back_unchanged(tiny, tmp_path):
    loaded = load(str(tiny), dtype="float32", device="cpu")
    before = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    done = write_edited(str(tiny), STEPS, tmp_path / "l", loaded=loaded)
    assert not done.out_of_core
    same_tensors(tensors(done.path), reference(tiny)[0])
    after = loaded.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_records_only_without_an_output(tiny, tmp_path):
    done = write_edited(str(tiny), STEPS, None)
    assert done.path is None and done.out_of_core and len(done.records) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", [{}, {"in_memory": True}, {"trust_remote_code": True}])
def test_gguf_output_has_no_in_memory_route(tiny, tmp_path, how):
    """A .gguf output is written by the GGUF writer whatever else is asked: from a safetensors
    source it is refused with the pointer to llama.cpp, and no directory named x.gguf appears."""
    with pytest.raises(LaserkitError, match="convert_hf_to_gguf.py"):
        write_edited(str(tiny), STEPS, tmp_path / "x.gguf", **how)
    assert not (tmp_path / "x.gguf").exists()


def test_reduce_in_memory_to_gguf_is_one_line(tiny, tmp_path):
    out = tmp_path / "x.gguf"
    r = run(tmp_path, "reduce", tiny, "--lname", "fc_in", "--lnum", "-1", "--rho", "0.5",
            "--in-memory", "--out", out)  # fmt: skip
    assert "convert_hf_to_gguf.py" in one_error(r)
    assert not out.exists()


def test_the_safetensors_writer_never_names_a_directory_gguf(tiny, tmp_path):
    """edit_checkpoint (0.1's laserkit.outofcore entry) writes directories only: a .gguf output
    is refused in one line naming write_edited, not written as a directory called x.gguf."""
    from laserkit.edit.ondisk import edit_checkpoint

    with pytest.raises(LaserkitError, match="write_edited") as e:
        edit_checkpoint(str(tiny), STEPS, tmp_path / "x.gguf")
    assert "\n" not in str(e.value) and not (tmp_path / "x.gguf").exists()
