"""Architectures described as data: how module names inside a transformer block map to roles.

No table here is keyed by model class. A block's matrices are recognised by their path relative to
the block (``self_attn.q_proj``, ``attention.query_key_value``, ``mlp.c_fc`` ...), the way peft
targets modules by name, and the few fused layouts are chosen from config attributes. A new
architecture that uses an existing naming needs nothing; one with new names needs one line here.
"""

from __future__ import annotations

import re

# The lname vocabulary of the LASER paper and reference CLI (docs/methods.md). Single roles name one
# matrix (or one block of a fused matrix); groups expand to several roles.
ROLES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_up", "fc_out")
GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "mlp": ("fc_in", "fc_up", "fc_out"),
    # the reference's lname "all" (laser/*_laser.py convert_name): every attention and MLP matrix
    "all": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_up", "fc_out"),
}
ROLE_HELP: dict[str, str] = {
    "q_proj": "attention query",
    "k_proj": "attention key",
    "v_proj": "attention value",
    "out_proj": "attention output",
    "fc_in": "first MLP matrix (U_in; gate_proj in gated MLPs)",
    "fc_up": "third MLP matrix of gated MLPs (up_proj)",
    "fc_out": "second MLP matrix (U_out; down_proj in gated MLPs)",
    "attn": "all attention matrices",
    "mlp": "all MLP matrices",
    "all": "all attention and MLP matrices (the reference's 'all')",
    "dont": "no intervention (the baseline)",
}

_ATTN = r"(?:attn|attention|self_attn|self_attention|attention\.self)"

# (regex on the module path relative to its block, role or fused layout). First match wins.
# A value starting with "fused:" names an entry of FUSED below.
ROLE_PATTERNS: tuple[tuple[str, str], ...] = (
    (rf"(?:^|\.){_ATTN}\.(?:c_attn|query_key_value|qkv_proj|Wqkv|qkv)$", "fused:qkv"),
    (r"(?:^|\.)(?:q_proj|query|q_lin|wq|to_q|q)$", "q_proj"),
    (r"(?:^|\.)(?:k_proj|key|k_lin|wk|to_k|k)$", "k_proj"),
    (r"(?:^|\.)(?:v_proj|value|v_lin|wv|to_v|v)$", "v_proj"),
    (r"(?:^|\.)attention\.output\.dense$", "out_proj"),
    (rf"(?:^|\.){_ATTN}\.(?:o_proj|out_proj|dense|out_lin|wo|c_proj|o|out)$", "out_proj"),
    (r"(?:^|\.)(?:gate_up_proj)$", "fused:gate_up"),
    (r"(?:^|\.)(?:gate_proj|w1)$", "fc_in"),
    (r"(?:^|\.)(?:up_proj|w3)$", "fc_up"),
    (r"(?:^|\.)(?:down_proj|w2)$", "fc_out"),
    (r"(?:^|\.)(?:c_fc|fc1|fc_in|dense_h_to_4h|lin1)$|^intermediate\.dense$", "fc_in"),
    (r"(?:^|\.)(?:mlp\.c_proj|fc2|fc_out|dense_4h_to_h|lin2)$|^output\.dense$", "fc_out"),
)

# Fused matrices: which roles they hold, as blocks of output rows. Which layout (concat, per-head
# interleaved, grouped, halves) a given architecture uses is the rule table targets.FUSED_RULES.
FUSED: dict[str, tuple[str, ...]] = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "gate_up": ("fc_in", "fc_up"),
}

# Config attribute aliases, first present wins.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
    "head_dim": ("head_dim",),
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
}

_COMPILED = tuple((re.compile(p), r) for p, r in ROLE_PATTERNS)


def classify(rel_path: str) -> str | None:
    """Role (or ``fused:<name>``) of a matrix from its path inside a block; None if unknown."""
    for pattern, role in _COMPILED:
        if pattern.search(rel_path):
            return role
    return None
