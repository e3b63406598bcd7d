"""laserkit's GGUF → safetensors conversion equals transformers' own GGUF load, tensor for tensor.

Each architecture transformers' GGUF loader reads gets a tiny GGUF file written here with the
``gguf`` package's writer and tensor-name map, following llama.cpp's converter conventions (llama
q/k rows permuted for its rotary layout, Gemma and Nemotron norms stored as ``w + 1``, GPT-2's
Conv1D weights transposed, Bloom's fused qkv in head-major order, Mamba's ``A = -exp(A_log)``).
The reference is ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``; laserkit's
conversion is loaded from its safetensors directory. An architecture laserkit does not convert is
refused in one line (checked on the installed command).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from laserkit.io.checkpoint import VERIFIED_GGUF_ARCHS

# GGUF architecture → (transformers model_type, tiny config, general.name)
ARCHS: dict[str, tuple[str, dict, str]] = {
    "llama": (
        "llama",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
        "tiny",
    ),
    "mistral": (
        "mistral",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
        "mistral",
    ),
    "qwen2": (
        "qwen2",
        dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
        "tiny",
    ),
    "qwen3": (
        "qwen3",
        dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
        "tiny",
    ),  # GGUF has no head_dim: 128
    "falcon": (
        "falcon",
        dict(
            hidden_size=32, num_attention_heads=4, new_decoder_architecture=False, multi_query=True
        ),
        "tiny",
    ),
    "phi3": (
        "phi3",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=4,
            pad_token_id=0,
        ),
        "tiny",
    ),
    "bloom": ("bloom", dict(hidden_size=32, n_head=4), "tiny"),
    "stablelm": (
        "stablelm",
        dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=4),
        "tiny",
    ),
    "gpt2": ("gpt2", dict(n_embd=32, n_head=4), "tiny"),
    "starcoder2": (
        "starcoder2",
        dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
        "tiny",
    ),
    "mamba": (
        "mamba",
        dict(hidden_size=32, state_size=4, conv_kernel=4, expand=2, time_step_rank=4),
        "tiny",
    ),
    "nemotron": (
        "nemotron",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
        "tiny",
    ),
    "gemma2": (
        "gemma2",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
        "tiny",
    ),
    "gemma3": (
        "gemma3_text",
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
        "tiny",
    ),
}
LAYERS = 2
VOCAB = 64


def _tiny_model(model_type: str, kw: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    layers = {"gpt2": "n_layer", "bloom": "n_layer"}.get(model_type, "num_hidden_layers")
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **{layers: LAYERS}, **kw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from their init, so an offset of 1 cannot hide
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + 0.5)
    return model


def _to_llama_cpp(arch: str, gname: str, w: np.ndarray, config) -> np.ndarray:
    """llama.cpp's converter's value/layout transforms (the inverse of transformers' reading)."""
    if arch == "llama" or arch == "mistral":
        if gname.startswith("blk.") and (".attn_q." in gname or ".attn_k." in gname):
            heads = (
                config.num_attention_heads if ".attn_q." in gname else config.num_key_value_heads
            )
            return (
                w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
                .swapaxes(1, 2)
                .reshape(w.shape)
            )
    if arch in ("gemma2", "gemma3", "nemotron") and gname.endswith("norm.weight"):
        return w + 1
    if arch == "gpt2" and any(
        k in gname
        for k in ("attn_qkv.weight", "ffn_down.weight", "ffn_up.weight", "attn_output.weight")
    ):
        return np.ascontiguousarray(w.T)
    if arch == "bloom" and "attn_qkv" in gname:
        n_head, n_embed = config.n_head, config.hidden_size
        head = n_embed // n_head
        parts = w.reshape(n_head, 3, head, *w.shape[1:])
        return np.concatenate(
            [parts[:, i].reshape(n_head * head, *w.shape[1:]) for i in range(3)], axis=0
        )
    if arch == "mamba" and gname.endswith("ssm_a"):
        return -np.exp(w)
    if arch == "mamba" and gname.endswith("ssm_conv1d.weight"):
        return np.ascontiguousarray(w[:, 0, :])
    return w


def _metadata(writer, arch: str, config) -> None:
    import gguf
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    key_arch = "llama" if arch == "mistral" else arch
    for key, attr in GGUF_CONFIG_MAPPING[arch].items():
        value = getattr(config, attr, None) if attr else None
        if value is None or key == "vocab_size":
            continue
        name = f"{key_arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(name, value)
        elif isinstance(value, int):
            writer.add_uint32(name, value)
        elif isinstance(value, float):
            writer.add_float32(name, value)
    writer.add_tokenizer_model("gpt2")
    byte = [chr(c) for c in range(ord("!"), ord("!") + VOCAB - 3)]
    writer.add_token_list(["<|endoftext|>", "<pad>", *byte, '!"'])
    writer.add_token_types(
        [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (VOCAB - 2)
    )
    writer.add_token_merges(['! "'])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(1)


def write_gguf(arch: str, path: Path):
    """A GGUF file of a tiny random model of ``arch``; returns the model it was written from."""
    import gguf

    model_type, kw, name = ARCHS[arch]
    model = _tiny_model(model_type, kw)
    key_arch = "llama" if arch == "mistral" else arch
    writer = gguf.GGUFWriter(str(path), arch=key_arch)
    writer.add_name(name)
    _metadata(writer, arch, model.config)
    garch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == key_arch)
    names = gguf.get_tensor_name_map(garch, LAYERS)
    tied = model.config.tie_word_embeddings
    for hf, t in model.state_dict().items():
        if tied and hf == "lm_head.weight":
            continue
        base, dot, suffix = hf.rpartition(".")
        g = names.get_name(base) or names.get_name(base.partition(".")[2])
        if g is None:
            g = names.get_name(hf)
            suffix = ""
        assert g is not None, f"{arch}: no GGUF name for {hf}"
        gname = f"{g}.{suffix}" if suffix else g
        w = _to_llama_cpp(arch, gname, t.detach().float().numpy(), model.config)
        writer.add_tensor(gname, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _reference(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.state_dict()


# "mistral": a llama-architecture file named mistral, which transformers cannot load (its name
# map has no "mistral" model type): checked below to be refused, not compared
@pytest.mark.parametrize("arch", sorted(a for a in ARCHS if a != "mistral"))
def test_conversion_equals_transformers_gguf_load(arch, tmp_path, monkeypatch, one_thread):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from laserkit.io.open import local_dir
    from laserkit.io.source import ModelSource

    monkeypatch.setenv("LASERKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / f"{arch}.gguf"
    original = write_gguf(arch, path)
    want = _reference(path)
    folder = local_dir(ModelSource.parse(str(path)))  # laserkit's cached conversion
    stored = load_file(folder / "model.safetensors")
    got = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), f"{arch}: {k} differs from transformers' load"
    for k, t in stored.items():  # the file itself, not only what loading it makes of it
        assert torch.equal(t, want[k]), f"{arch}: stored {k} differs"
    # and the GGUF written here follows llama.cpp: transformers recovers the original model
    # (to float32 rounding where llama.cpp stores w + 1)
    for k, t in original.state_dict().items():
        assert torch.allclose(want[k], t, rtol=0, atol=1e-6), (
            f"{arch}: test file's {k} is not llama.cpp's layout"
        )


def test_a_gguf_transformers_cannot_load_is_refused_in_one_line(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from laserkit.core.errors import LaserkitError
    from laserkit.io.open import local_dir
    from laserkit.io.source import ModelSource

    monkeypatch.setenv("LASERKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    write_gguf("mistral", path)
    with pytest.raises(NotImplementedError):
        AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    with pytest.raises(LaserkitError, match="cannot map the tensors") as e:
        local_dir(ModelSource.parse(str(path)))
    assert "\n" not in str(e.value)


def test_gemma_norms_are_not_one_larger(tmp_path, monkeypatch):
    """The reported fault: Gemma-3 norms in laserkit's copy were exactly 1.0 larger."""
    from laserkit.io.checkpoint import GGUFCheckpoint

    monkeypatch.setenv("LASERKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "g.gguf"
    model = write_gguf("gemma3", path)
    ckpt = GGUFCheckpoint(path)
    name = "model.layers.0.input_layernorm.weight"
    assert torch.allclose(ckpt.get(name), model.state_dict()[name], rtol=0, atol=1e-6)


def test_every_architecture_transformers_reads_is_verified_or_refused():
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    tested = set(ARCHS) - {"mistral"}
    assert set(VERIFIED_GGUF_ARCHS) <= tested  # nothing claimed without a test above
    refused = (
        set(GGUF_SUPPORTED_ARCHITECTURES) - set(VERIFIED_GGUF_ARCHS) - {"general", "tokenizer"}
    )
    assert {"qwen2_moe", "t5", "deci"} <= refused


def test_unverified_architecture_is_refused_in_one_line(tmp_path):
    import gguf

    path = tmp_path / "moe.gguf"
    writer = gguf.GGUFWriter(str(path), arch="qwen2moe")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    before = path.read_bytes()
    env = {**os.environ, "LASERKIT_CACHE": str(tmp_path / "cache")}
    exe = str(Path(sys.executable).with_name("laserkit"))
    r = subprocess.run(
        [exe, "scan", str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laserkit: error: ")
    assert "'qwen2moe'" in lines[0] and "gemma3" in lines[0]
    assert path.read_bytes() == before
