"""GGUF out: the packaged Q4_1 model edited and written as GGUF, read back by gguf and by
transformers, against the in-memory edit of the same model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from laserkit import Editor, Intervention, LaserkitError
from laserkit.edit.write import write_edited
from laserkit.io.source import default_gguf

STEPS = [("fc_in", -1, Intervention(rho=0.1)), ("q_proj", 3, Intervention(rho=0.2))]
EDITED = {
    "blk.29.ffn_gate.weight": "model.layers.29.mlp.gate_proj.weight",
    "blk.3.attn_q.weight": "model.layers.3.self_attn.q_proj.weight",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "reduced.gguf"
    done = write_edited("default", STEPS, out)
    return done.records, done.path


def test_gguf_out_keeps_metadata_and_unchanged_bytes(written):
    from gguf import GGUFReader

    records, path = written
    src, got = GGUFReader(str(default_gguf())), GGUFReader(str(path))
    assert [t.name for t in got.tensors] == [t.name for t in src.tensors]
    changed = []
    for a, b in zip(src.tensors, got.tensors, strict=True):
        assert a.tensor_type == b.tensor_type, a.name  # Q4_1 is written back as Q4_1
        if not np.array_equal(a.data, b.data):
            changed.append(a.name)
    assert sorted(changed) == sorted(EDITED)
    assert set(got.fields) == set(src.fields) | {"laserkit.record"}
    for key in (
        "general.architecture",
        "tokenizer.ggml.tokens",
        "tokenizer.chat_template",
        "llama.block_count",
        "tokenizer.ggml.merges",
    ):
        assert got.fields[key].contents() == src.fields[key].contents(), key
    record = json.loads(got.fields["laserkit.record"].contents())
    assert record["interventions"] == json.loads(json.dumps([r.to_json() for r in records]))
    assert {v["written_type"] for v in record["gguf_types"].values()} == {"Q4_1"}
    card = path.with_name(path.name + ".README.md").read_text()
    assert "| `model.layers.29.mlp.gate_proj.weight` | Q4_1 | Q4_1 |" in card


def test_transformers_reads_it_back_within_the_quantization_error(written, default_loaded):
    """transformers' GGUF loader on the output gives the logits of the in-memory edit whose edited
    matrices went through Q4_1 (≤ 1e-3, float noise); against the unquantized edit (the
    safetensors save) the difference is Q4_1's error on two rank-reduced matrices: measured
    ‖Δ‖/‖logits‖ = 0.040; asserted < 0.08."""
    from gguf import GGMLQuantizationType, quants
    from transformers import AutoModelForCausalLM

    _, path = written
    gg = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    model = default_loaded.model
    ids = default_loaded.tokenizer(
        "The capital of France is Paris, and the capital of Italy is", return_tensors="pt"
    )["input_ids"]
    params = dict(model.named_parameters())
    ed = Editor(model)
    try:
        for lname, lnum, iv in STEPS:
            ed.apply(lname, lnum, iv)
        with torch.no_grad():
            edited = model(ids).logits
            for hf in EDITED.values():
                w = params[hf].data.numpy()
                q = quants.quantize(w, GGMLQuantizationType.Q4_1)
                params[hf].data.copy_(
                    torch.from_numpy(quants.dequantize(q, GGMLQuantizationType.Q4_1))
                )
            requantized = model(ids).logits
            got = gg(ids).logits
    finally:
        ed.restore()
    # every other tensor is what laserkit's streamed conversion of the source holds, bit for bit
    # (transformers' loader on the output vs gguf_cache's conversion of the input)
    for name, p in gg.named_parameters():
        if name not in EDITED.values():
            assert torch.equal(p, params[name]), name
    torch.testing.assert_close(got, requantized, atol=1e-3, rtol=1e-4)
    rel = float((got - edited).norm() / edited.norm())
    assert 0 < rel < 0.08, rel


def test_writable_types():
    from gguf import GGMLQuantizationType as T

    from laserkit.edit.gguf import writable_type

    assert writable_type(T.Q4_1) == T.Q4_1 and writable_type(T.Q8_0) == T.Q8_0
    assert writable_type(T.F32) == T.F32 and writable_type(T.BF16) == T.BF16
    assert writable_type(T.Q4_K) == T.F16 and writable_type(T.Q6_K) == T.F16  # no quantizer


def test_gguf_out_from_safetensors_is_refused_with_a_pointer(tmp_path):
    from conftest import make_tiny

    make_tiny("llama").save_pretrained(tmp_path / "m")
    with pytest.raises(LaserkitError, match="convert_hf_to_gguf.py") as e:
        write_edited(str(tmp_path / "m"), STEPS[:1], tmp_path / "x.gguf")
    assert "\n" not in str(e.value) and not (tmp_path / "x.gguf").exists()
