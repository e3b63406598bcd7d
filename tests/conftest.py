"""Shared fixtures: tiny random models of every family (built from config classes, no download)
and the real default model (SmolLM2-135M-Instruct, converted once from its packaged GGUF)."""

from __future__ import annotations

import signal

import pytest
import torch

# Small configs per model_type; every family laserkit claims to map by itself.
TINY: dict[str, dict] = {
    "llama": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=12,
    ),
    "mistral": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
    ),
    "qwen2": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
    ),
    "gemma": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        num_hidden_layers=3,
        head_dim=8,
    ),
    "gpt2": dict(n_embd=32, n_head=4, n_layer=3, n_positions=128),
    "gptj": dict(n_embd=32, n_head=4, n_layer=3, n_positions=128, rotary_dim=4),
    "gpt_neox": dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3
    ),
    "phi": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3),
    "phi3": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
        pad_token_id=0,
    ),
    "opt": dict(
        hidden_size=32,
        ffn_dim=64,
        num_attention_heads=4,
        num_hidden_layers=3,
        word_embed_proj_dim=32,
    ),
    "falcon": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=3),
    "bert": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3),
    "roberta": dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3
    ),
}
ENCODERS = {"bert", "roberta"}


def make_tiny(model_type: str, vocab_size: int = 128, seed: int = 0, **overrides):
    """A tiny random model of one family, in eval mode, deterministic for a seed."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    kwargs = {**TINY[model_type], "vocab_size": vocab_size, **overrides}
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    cls = AutoModelForMaskedLM if model_type in ENCODERS else AutoModelForCausalLM
    return cls.from_config(config).eval()


@pytest.fixture(scope="session")
def default_model_dir():
    """The real default model as a cached safetensors directory (converted on first use)."""
    from laserkit.io.open import default_model_dir as _dir

    return _dir()


@pytest.fixture(scope="session")
def default_loaded(default_model_dir):
    """The real default model loaded once for the session (float32, CPU). Do not leave it edited."""
    from laserkit.io.load import load

    return load(str(default_model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread avoids OpenMP spin-waiting on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def default_sigint() -> None:
    """The child starts with Python's default Ctrl-C disposition: a suite run as a background
    job of a shell script inherits SIGINT ignored, and laserkit keeps an ignored SIGINT ignored
    (as it should), so the interrupt under test would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
