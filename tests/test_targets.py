"""Target resolution on tiny random models of every family, checked by what the model computes."""

from __future__ import annotations

import pytest
import torch
from conftest import ENCODERS, TINY, make_tiny

from laserkit import Editor, Intervention, LaserkitError, model_layout, parse_layers, resolve
from laserkit.model.targets import names_layout

# Where each family keeps its matrices (relative to a block): what every lname must resolve to.
EXPECTED: dict[str, dict[str, str]] = {
    "llama": dict(
        q_proj="self_attn.q_proj",
        k_proj="self_attn.k_proj",
        v_proj="self_attn.v_proj",
        out_proj="self_attn.o_proj",
        fc_in="mlp.gate_proj",
        fc_up="mlp.up_proj",
        fc_out="mlp.down_proj",
    ),
    "gpt2": dict(
        q_proj="attn.c_attn",
        k_proj="attn.c_attn",
        v_proj="attn.c_attn",
        out_proj="attn.c_proj",
        fc_in="mlp.c_fc",
        fc_out="mlp.c_proj",
    ),
    "gptj": dict(
        q_proj="attn.q_proj",
        k_proj="attn.k_proj",
        v_proj="attn.v_proj",
        out_proj="attn.out_proj",
        fc_in="mlp.fc_in",
        fc_out="mlp.fc_out",
    ),
    "gpt_neox": dict(
        q_proj="attention.query_key_value",
        k_proj="attention.query_key_value",
        v_proj="attention.query_key_value",
        out_proj="attention.dense",
        fc_in="mlp.dense_h_to_4h",
        fc_out="mlp.dense_4h_to_h",
    ),
    "phi": dict(
        q_proj="self_attn.q_proj",
        k_proj="self_attn.k_proj",
        v_proj="self_attn.v_proj",
        out_proj="self_attn.dense",
        fc_in="mlp.fc1",
        fc_out="mlp.fc2",
    ),
    "phi3": dict(
        q_proj="self_attn.qkv_proj",
        k_proj="self_attn.qkv_proj",
        v_proj="self_attn.qkv_proj",
        out_proj="self_attn.o_proj",
        fc_in="mlp.gate_up_proj",
        fc_up="mlp.gate_up_proj",
        fc_out="mlp.down_proj",
    ),
    "opt": dict(
        q_proj="self_attn.q_proj",
        k_proj="self_attn.k_proj",
        v_proj="self_attn.v_proj",
        out_proj="self_attn.out_proj",
        fc_in="fc1",
        fc_out="fc2",
    ),
    "falcon": dict(
        q_proj="self_attention.query_key_value",
        k_proj="self_attention.query_key_value",
        v_proj="self_attention.query_key_value",
        out_proj="self_attention.dense",
        fc_in="mlp.dense_h_to_4h",
        fc_out="mlp.dense_4h_to_h",
    ),
    "bert": dict(
        q_proj="attention.self.query",
        k_proj="attention.self.key",
        v_proj="attention.self.value",
        out_proj="attention.output.dense",
        fc_in="intermediate.dense",
        fc_out="output.dense",
    ),
}
for _fam in ("mistral", "qwen2", "gemma"):
    EXPECTED[_fam] = EXPECTED["llama"]
EXPECTED["roberta"] = EXPECTED["bert"]
FAMILIES = sorted(TINY)


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model):
    with torch.no_grad():
        return model(**_inputs(model)).logits


def _set_rows(model, t, fn):
    """Apply fn to the target's rows of weight (and bias, if any) directly, in (out, in) view."""
    mods = dict(model.named_modules())
    mod = mods[t.module]
    idx = t.row_index()
    with torch.no_grad():
        w = mod.weight.T if t.transposed else mod.weight
        rows = slice(None) if idx is None else idx
        w[rows] = fn(w[rows])
        if getattr(mod, "bias", None) is not None:
            mod.bias[rows] = fn(mod.bias[rows])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_lname_resolves_to_the_expected_matrix(family):
    model = make_tiny(family)
    layout = model_layout(model)
    assert layout.num_layers == TINY[family].get("num_hidden_layers", TINY[family].get("n_layer"))
    for lname, rel in EXPECTED[family].items():
        targets = resolve(layout, lname, "all")
        assert [t.layer for t in targets] == list(range(layout.num_layers)), lname
        assert {t.module for t in targets} == {
            f"{layout.prefix}.{i}.{rel}" for i in range(layout.num_layers)
        }, lname
        params = dict(model.named_parameters())
        assert all(t.param in params for t in targets)
    roles = set(EXPECTED[family])
    assert set(model_layout(model).lnames()) >= roles | {"attn", "mlp"}


def _zeroing_makes_irrelevant(model, layout, zero: str, perturbed: tuple[str, ...]):
    """Set the ``zero`` blocks to 0, then perturb the ``perturbed`` blocks: the logits must not
    move (what the model computes says which rows are which). Returns the logits after zeroing."""
    for t in resolve(layout, zero, "all"):
        _set_rows(model, t, torch.zeros_like)
    before = _logits(model)
    for t in [t for name in perturbed for t in resolve(layout, name, "all")]:
        _set_rows(model, t, lambda x: x + torch.randn_like(x))
    torch.testing.assert_close(_logits(model), before, rtol=1e-5, atol=1e-5)
    return before


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ENCODERS])
def test_query_block_is_the_query(family):
    """With q = 0 every attention score is equal, so the keys cannot matter."""
    model = make_tiny(family)
    layout = model_layout(model)
    before = _zeroing_makes_irrelevant(model, layout, "q_proj", ("k_proj",))
    for t in resolve(layout, "v_proj", "all"):  # while values do matter
        _set_rows(model, t, lambda x: x + torch.randn_like(x))
    assert not torch.allclose(_logits(model), before, atol=1e-4)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ENCODERS])
def test_value_block_is_the_value(family):
    """With v = 0 the attention output is constant, so queries and keys cannot matter."""
    model = make_tiny(family)
    _zeroing_makes_irrelevant(model, model_layout(model), "v_proj", ("q_proj", "k_proj"))


@pytest.mark.parametrize("family", ["phi3", "llama"])
def test_gate_block_is_the_gate(family):
    """In a gated MLP act(gate)·up: with gate = 0 (act(0) = 0) the up matrix cannot matter."""
    model = make_tiny(family)
    layout = model_layout(model)
    for t in resolve(layout, "fc_in", "all"):
        _set_rows(model, t, torch.zeros_like)
    before = _logits(model)
    for t in resolve(layout, "fc_up", "all"):
        _set_rows(model, t, lambda x: x + torch.randn_like(x))
    torch.testing.assert_close(_logits(model), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi3", "falcon"])
@pytest.mark.parametrize("lname", ["q_proj", "k_proj", "v_proj"])
def test_fused_block_is_edited_alone(family, lname):
    model = make_tiny(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    (rec,) = ed.apply(lname, 1, Intervention(rho=0.0))
    (t,) = ed.targets(lname, 1)
    assert t.rows is not None
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [t.param]
    w0 = before[t.param].T if t.transposed else before[t.param]
    w1 = after[t.param].T if t.transposed else after[t.param]
    mask = torch.zeros(w0.shape[0], dtype=torch.bool)
    mask[t.row_index()] = True
    assert torch.equal(w1[~mask], w0[~mask])  # the other blocks are untouched
    assert torch.count_nonzero(w1[mask]) == 0  # ρ = 0 keeps nothing of this block
    assert rec["rank"] == 0


def test_gpt2_conv1d_is_reduced_in_out_in_orientation():
    """Conv1D stores (in, out); the edit must see and write (out, in)."""
    model = make_tiny("gpt2")
    ed = Editor(model)
    (t,) = ed.targets("fc_in", 0)
    assert t.transposed
    W = model.transformer.h[0].mlp.c_fc.weight.detach().T.clone()  # (out, in) = (128, 32)
    ed.apply("fc_in", 0, Intervention(rho=0.25))
    got = model.transformer.h[0].mlp.c_fc.weight.detach().T
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close(got, (U[:, :8] * S[:8]) @ Vh[:8], rtol=1e-5, atol=1e-6)


def test_layer_matching_is_exact():
    model = make_tiny("llama")  # 12 layers: "1" must not match 10 or 11
    layout = model_layout(model)
    assert [t.layer for t in resolve(layout, "fc_in", "1")] == [1]
    assert [t.module for t in resolve(layout, "fc_in", 1)] == ["model.layers.1.mlp.gate_proj"]
    assert [t.layer for t in resolve(layout, "fc_out", "-1")] == [11]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", list(range(12))),
        ("7", [7]),
        ("-1", [11]),
        ("-12", [0]),
        ("3,5,7", [3, 5, 7]),
        ("2-4", [2, 3, 4]),
        ("-3:", [9, 10, 11]),
        (":2", [0, 1]),
        ("1,1,0-1", [0, 1]),
        (5, [5]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("12", "layer 12 is out of range: this model has layers 0..11"),
        ("-13", "out of range"),
        ("3-12", "out of range"),
        ("5-2", "empty"),
        ("x", "cannot read layer spec 'x'"),
        ("", "empty layer list"),
    ],
)
def test_bad_layers_are_one_line_errors(spec, message):
    with pytest.raises(LaserkitError, match=message) as e:
        parse_layers(spec, 12)
    assert "\n" not in str(e.value)


def test_unknown_lname_lists_what_the_model_offers():
    layout = model_layout(make_tiny("gpt2"))
    with pytest.raises(LaserkitError) as e:
        resolve(layout, "gate_proj", "0")
    msg = str(e.value)
    assert "unknown layer name 'gate_proj'" in msg
    assert "fc_in" in msg and "mlp.c_fc" in msg and "fc_up" not in msg
    assert "\n" not in msg


def test_groups_and_module_paths():
    layout = model_layout(make_tiny("llama"))
    assert [t.lname for t in resolve(layout, "mlp", "0")] == ["fc_in", "fc_up", "fc_out"]
    assert len(resolve(layout, "attn", "0-1")) == 8
    assert [t.module for t in resolve(layout, "mlp.down_proj", "2")] == [
        "model.layers.2.mlp.down_proj"
    ]
    assert resolve(layout, "dont", "all") == []
    assert len(resolve(layout, "fc_in,fc_out", "all")) == 24


def test_names_layout_matches_model_layout():
    """The checkpoint-name route (used by the streaming scan) sees the same blocks and roles."""
    model = make_tiny("llama")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    by_names = names_layout(shapes, model.config)
    by_model = model_layout(model)
    assert by_names.prefix == by_model.prefix and by_names.num_layers == by_model.num_layers
    key = [(m.layer, m.rel, m.role) for m in by_model.matrices]
    assert sorted(key) == sorted((m.layer, m.rel, m.role) for m in by_names.matrices)


# Fused layouts beyond each family's default config: Falcon-40B's grouped query_key_value,
# Falcon-7B-style per-head (no multi-query) and GPT-BigCode without multi-query.
VARIANTS = {
    "falcon-grouped": ("falcon", dict(new_decoder_architecture=True, num_kv_heads=2)),
    "falcon-per-head": ("falcon", dict(multi_query=False)),
    "bigcode-per-head": ("gpt_bigcode", dict(n_embd=32, n_head=4, n_layer=2, multi_query=False)),
    "bigcode-mqa": ("gpt_bigcode", dict(n_embd=32, n_head=4, n_layer=2)),
}


def _variant(name):
    family, overrides = VARIANTS[name]
    if family not in TINY:
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        cfg = AutoConfig.for_model(family, vocab_size=128, **overrides)
        return AutoModelForCausalLM.from_config(cfg).eval()
    return make_tiny(family, **overrides)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_layout_variants_split_q_k_v_as_the_model_computes(variant):
    """q = 0 makes keys irrelevant, v = 0 makes q and k irrelevant: a wrong row layout fails."""
    model = _variant(variant)
    layout = model_layout(model)
    qs = resolve(layout, "q_proj", "all")
    assert qs and all(t.rows is not None for t in qs)
    _zeroing_makes_irrelevant(model, layout, "q_proj", ("k_proj",))
    model = _variant(variant)
    _zeroing_makes_irrelevant(model, layout, "v_proj", ("q_proj", "k_proj"))


def test_grouped_rows_are_per_group():
    """Falcon-40B layout, 4 query heads over 2 KV groups of head_dim 8: [q q k v | q q k v]."""
    from types import SimpleNamespace

    from laserkit.model.targets import fused_rows

    cfg = SimpleNamespace(
        model_type="falcon",
        new_decoder_architecture=True,
        hidden_size=32,
        num_attention_heads=4,
        num_kv_heads=2,
    )
    rows = fused_rows("qkv", "self_attention.query_key_value", 64, cfg)
    assert rows == {
        "q_proj": ((0, 16), (32, 48)),
        "k_proj": ((16, 24), (48, 56)),
        "v_proj": ((24, 32), (56, 64)),
    }


def test_unknown_query_key_value_layout_is_refused_not_guessed():
    from types import SimpleNamespace

    from laserkit.model.targets import fused_rows

    cfg = SimpleNamespace(model_type="mystery", hidden_size=32, num_attention_heads=4)
    with pytest.raises(LaserkitError, match="cannot split fused matrix .*'mystery'") as e:
        fused_rows("qkv", "attention.query_key_value", 96, cfg)
    assert "\n" not in str(e.value)
