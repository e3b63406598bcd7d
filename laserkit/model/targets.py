"""Resolve (lname, lnum) to exact weight matrices, for any architecture, from the model itself.

The transformer blocks are found as the model's largest ``nn.ModuleList`` (or, for a checkpoint
read without building the model, the parameter-name prefix followed by the most layer indices).
Inside each block, matrices are classified by their relative path (architectures.ROLE_PATTERNS).
Layers are matched by index, never by substring: layer 1 is not layer 10.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import LaserkitError
from .architectures import CONFIG_KEYS, FUSED, GROUPS, ROLE_HELP, ROLES, classify


@dataclass(frozen=True)
class Target:
    """One matrix, or one block of rows of a fused matrix, in the (out, in) orientation."""

    lname: str
    layer: int
    module: str
    rows: tuple[tuple[int, int], ...] | None = None  # row ranges of a fused weight; None = all
    transposed: bool = False  # weight stored as (in, out), as GPT-2's Conv1D does

    @property
    def param(self) -> str:
        return f"{self.module}.weight"

    @property
    def label(self) -> str:
        part = "" if self.rows is None else f"[{self.lname}]"
        return f"{self.module}{part}"

    def row_index(self) -> torch.Tensor | None:
        if self.rows is None:
            return None
        return torch.cat([torch.arange(a, b) for a, b in self.rows])


@dataclass
class Matrix:
    """A 2-D weight inside a block, with what it was recognised as."""

    layer: int
    rel: str  # path relative to the block, e.g. "mlp.down_proj"
    module: str  # full module path
    role: str | None  # a role, "fused:<name>", or None when not recognised
    transposed: bool
    out_features: int


@dataclass
class Layout:
    """The blocks of a model and every matrix inside them."""

    prefix: str
    num_layers: int
    matrices: list[Matrix] = field(default_factory=list)
    config: object | None = None

    def lnames(self) -> dict[str, list[str]]:
        """Every lname this model offers, with the relative paths it resolves to."""
        out: dict[str, list[str]] = {}
        for role in ROLES:
            rels = sorted({m.rel for m in self.matrices if _holds(m, role)})
            if rels:
                out[role] = [f"{r}[{role}]" if self._is_fused(r) else r for r in rels]
        for group, roles in GROUPS.items():
            if any(r in out for r in roles):
                out[group] = [x for r in roles for x in out.get(r, [])]
        for rel in sorted({m.rel for m in self.matrices}):
            out.setdefault(rel, [rel])
        return out

    def _is_fused(self, rel: str) -> bool:
        return any(m.rel == rel and (m.role or "").startswith("fused:") for m in self.matrices)


def _holds(m: Matrix, role: str) -> bool:
    if m.role == role:
        return True
    return bool(m.role and m.role.startswith("fused:") and role in FUSED[m.role[6:]])


def _is_matrix_module(mod: nn.Module) -> bool:
    weight = getattr(mod, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return False
    return isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: its ModuleList holding the most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            size = sum(p.numel() for p in mod.parameters())
            if best is None or size > best[0]:
                best = (size, name, mod)
    if best is None:
        raise LaserkitError(
            f"unsupported architecture {type(model).__name__}: no list of transformer blocks "
            "(nn.ModuleList) found; laserkit supports models built from repeated blocks"
        )
    return best[1], best[2]


def model_layout(model: nn.Module) -> Layout:
    """Find blocks and classify every Linear/Conv1D matrix inside them."""
    prefix, blocks = find_blocks(model)
    layout = Layout(prefix=prefix, num_layers=len(blocks), config=getattr(model, "config", None))
    for i, block in enumerate(blocks):
        for rel, mod in block.named_modules():
            if rel and _is_matrix_module(mod):
                transposed = type(mod).__name__ == "Conv1D"
                out = mod.weight.shape[1] if transposed else mod.weight.shape[0]
                layout.matrices.append(
                    Matrix(i, rel, f"{prefix}.{i}.{rel}", classify(rel), transposed, out)
                )
    return layout


_LAYER_NAME = re.compile(r"^(?P<prefix>.+?)\.(?P<idx>\d+)\.(?P<rel>.+)\.weight$")


def names_layout(shapes: dict[str, tuple[int, ...]], config: object | None = None) -> Layout:
    """The same Layout from checkpoint tensor names and shapes alone (no model is built).

    Used by the streaming scan. Orientation is taken as (out, in); the statistics it computes do
    not depend on it.
    """
    counts: dict[str, set[int]] = {}
    for name in shapes:
        m = _LAYER_NAME.match(name)
        if m:
            counts.setdefault(m["prefix"], set()).add(int(m["idx"]))
    if not counts:
        raise LaserkitError(
            "unsupported architecture: no '<prefix>.<layer>.<module>.weight' tensors found in the "
            "checkpoint"
        )
    prefix = max(counts, key=lambda p: (len(counts[p]), -len(p)))
    layout = Layout(prefix=prefix, num_layers=max(counts[prefix]) + 1, config=config)
    for name, shape in shapes.items():
        m = _LAYER_NAME.match(name)
        if m and m["prefix"] == prefix and len(shape) == 2:
            rel = m["rel"]
            layout.matrices.append(
                Matrix(
                    int(m["idx"]), rel, f"{prefix}.{m['idx']}.{rel}", classify(rel), False, shape[0]
                )
            )
    layout.matrices.sort(key=lambda x: (x.layer, x.rel))
    return layout


def parse_layers(spec: str | int | Iterable[int], num_layers: int) -> list[int]:
    """Layer indices from ``all``, ``7``, ``-1``, ``3,5,7``, ``20-23`` (inclusive) or ``-4:``."""
    if isinstance(spec, int):
        items: list[str] = [str(spec)]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = [str(int(x)) for x in spec]
    if not items:
        raise LaserkitError("empty layer list; use a number, a list 3,5, a range 20-23 or 'all'")
    allowed = f"this model has layers 0..{num_layers - 1} (negative indices count from the end)"
    out: set[int] = set()
    for item in items:
        try:
            if item == "all":
                out.update(range(num_layers))
            elif ":" in item:
                a, b = item.split(":", 1)
                out.update(range(num_layers)[slice(int(a) if a else None, int(b) if b else None)])
            elif re.fullmatch(r"\d+-\d+", item):
                lo, hi = (int(x) for x in item.split("-"))
                if lo > hi:
                    raise LaserkitError(f"layer range {item} is empty (start > end)")
                for i in (lo, hi):
                    if i >= num_layers:
                        raise LaserkitError(f"layer {i} is out of range: {allowed}")
                out.update(range(lo, hi + 1))
            else:
                i = int(item)
                if not -num_layers <= i < num_layers:
                    raise LaserkitError(f"layer {i} is out of range: {allowed}")
                out.add(i % num_layers)
        except ValueError:
            raise LaserkitError(
                f"cannot read layer spec {item!r}: use a number (-1 = last), a list 3,5,7, an "
                "inclusive range 20-23, a slice -4: or 'all'"
            ) from None
    return sorted(out)


def _cfg(config: object | None, key: str) -> int | None:
    for attr in CONFIG_KEYS[key]:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class FusedRule:
    """When a fused matrix has a layout: every condition given must hold; first rule wins.

    ``model_types``: the config's model_type is one of these; ``flags``: config attributes that
    must have these truth values; ``suffixes``: the matrix path inside the block ends with one.
    """

    fused: str  # an entry of architectures.FUSED
    layout: str  # an entry of LAYOUTS
    model_types: frozenset[str] | None = None
    flags: tuple[tuple[str, bool], ...] = ()
    suffixes: tuple[str, ...] | None = None

    def matches(self, fused: str, rel: str, config: object | None) -> bool:
        if fused != self.fused:
            return False
        if (
            self.model_types is not None
            and getattr(config, "model_type", None) not in self.model_types
        ):
            return False
        if any(bool(getattr(config, k, False)) != v for k, v in self.flags):
            return False
        return self.suffixes is None or rel.split(".")[-1] in self.suffixes


# How each architecture lays out its fused matrices, read from its attention code in
# transformers (where the fused output is viewed and split):
#   grouped   Falcon new_decoder_architecture: per KV group [q_1..q_g | k | v]
#   per_head  GPT-NeoX, BLOOM, Persimmon, GPT-NeoX-Japanese, Falcon without multi-query, GPT-BigCode
#             without multi-query: view(..., heads, 3, head_dim): per head [q_h | k_h | v_h]
#   concat    GPT-2 c_attn, Phi-3 qkv_proj, MPT Wqkv, Falcon / GPT-BigCode multi-query:
#             [q (all heads) | k (kv heads) | v (kv heads)]
#   halves    gate_up_proj: [gate | up]
# A `query_key_value` of any other model type is refused rather than guessed: both per_head and
# concat are in use under that name, and a wrong guess edits the wrong rows silently.
FUSED_RULES: tuple[FusedRule, ...] = (
    FusedRule("gate_up", "halves"),
    FusedRule("qkv", "grouped", flags=(("new_decoder_architecture", True),)),
    FusedRule("qkv", "concat", flags=(("multi_query", True),)),
    FusedRule(
        "qkv",
        "per_head",
        model_types=frozenset(
            {"gpt_neox", "bloom", "persimmon", "gpt_neox_japanese", "falcon", "gpt_bigcode"}
        ),
    ),
    FusedRule("qkv", "concat", suffixes=("c_attn", "qkv_proj", "Wqkv", "qkv")),
)


def _halves(n: int, **_: int) -> dict[str, tuple[tuple[int, int], ...]]:
    h = n // 2
    return {"fc_in": ((0, h),), "fc_up": ((h, n),)}


def _concat(heads: int, kv: int, hd: int, **_: int) -> dict[str, tuple[tuple[int, int], ...]]:
    q, k = heads * hd, kv * hd
    return {"q_proj": ((0, q),), "k_proj": ((q, q + k),), "v_proj": ((q + k, q + 2 * k),)}


def _per_head(heads: int, hd: int, **_: int) -> dict[str, tuple[tuple[int, int], ...]]:
    return {
        r: tuple((h * 3 * hd + i * hd, h * 3 * hd + (i + 1) * hd) for h in range(heads))
        for i, r in enumerate(("q_proj", "k_proj", "v_proj"))
    }


def _grouped(heads: int, kv: int, hd: int, **_: int) -> dict[str, tuple[tuple[int, int], ...]]:
    g = heads // kv
    step = (g + 2) * hd
    return {
        "q_proj": tuple((j * step, j * step + g * hd) for j in range(kv)),
        "k_proj": tuple((j * step + g * hd, j * step + (g + 1) * hd) for j in range(kv)),
        "v_proj": tuple((j * step + (g + 1) * hd, (j + 1) * step) for j in range(kv)),
    }


LAYOUTS: dict[str, Callable[..., dict[str, tuple[tuple[int, int], ...]]]] = {
    "halves": _halves,
    "concat": _concat,
    "per_head": _per_head,
    "grouped": _grouped,
}


def fused_layout(fused: str, rel: str, config: object | None) -> str:
    """The name of the layout FUSED_RULES gives this fused matrix; LaserkitError when none."""
    for rule in FUSED_RULES:
        if rule.matches(fused, rel, config):
            return rule.layout
    mt = getattr(config, "model_type", None)
    raise LaserkitError(
        f"cannot split fused matrix {rel} of model type {mt!r}: its config declares neither "
        "grouping (new_decoder_architecture) nor multi-query, and this model type has no known "
        "layout (per-head or concatenated); use the module path as --lname to edit it whole"
    )


def fused_rows(
    fused: str, rel: str, out_features: int, config: object | None
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Row ranges of each role inside a fused matrix, by the layout FUSED_RULES picks."""
    layout = fused_layout(fused, rel, config)
    if layout == "halves" and out_features % 2:
        raise LaserkitError(f"fused gate/up matrix {rel} has an odd number of rows")
    heads, hidden = _cfg(config, "heads"), _cfg(config, "hidden")
    if layout == "halves":
        rows = _halves(out_features)
    elif heads is None or hidden is None:
        if layout != "concat" or out_features % 3:
            raise LaserkitError(f"cannot split fused qkv matrix {rel}: config lacks head counts")
        t = out_features // 3
        return {r: ((i * t, (i + 1) * t),) for i, r in enumerate(FUSED[fused])}
    else:
        hd = _cfg(config, "head_dim") or hidden // heads
        multi_query = layout == "concat" and getattr(config, "multi_query", False)
        kv = 1 if multi_query else (_cfg(config, "kv_heads") or heads)
        if layout == "grouped" and heads % kv:
            raise LaserkitError(
                f"cannot split fused qkv matrix {rel}: {heads} heads do not "
                f"form groups over {kv} key/value heads"
            )
        rows = LAYOUTS[layout](n=out_features, heads=heads, kv=kv, hd=hd)
    total = sum(b - a for rs in rows.values() for a, b in rs)
    if total != out_features:
        raise LaserkitError(
            f"cannot split fused matrix {rel}: {out_features} rows, the {layout} layout expects "
            f"{total}"
        )
    return rows


def expand_lnames(lname: str, layout: Layout) -> list[str]:
    """Roles or relative paths named by a (comma-separated) lname; 'dont' gives none."""
    offered = layout.lnames()
    names: list[str] = []
    for part in (p.strip() for p in lname.split(",")):
        if not part or part == "dont":
            continue
        if part not in offered:
            listing = ", ".join(["dont", *offered])
            raise LaserkitError(f"unknown layer name {part!r}: this model offers {listing}")
        names.extend(GROUPS.get(part, (part,)))
    return names


def resolve(layout: Layout, lname: str, lnum: str | int | Iterable[int] = "all") -> list[Target]:
    """Exact targets for (lname, lnum) on a layout; raises LaserkitError on unknown input."""
    names = expand_lnames(lname, layout)
    layers = set(parse_layers(lnum, layout.num_layers))
    targets: list[Target] = []
    seen: set[tuple[str, str]] = set()
    for m in layout.matrices:
        if m.layer not in layers:
            continue
        for name in names:
            if name in ROLES and _holds(m, name):
                rows = None
                if m.role and m.role.startswith("fused:"):
                    rows = fused_rows(m.role[6:], m.rel, m.out_features, layout.config)[name]
                key = (m.module, name)
            elif name == m.rel:
                rows, key = None, (m.module, "*")
            else:
                continue
            if key not in seen:
                seen.add(key)
                targets.append(Target(name, m.layer, m.module, rows, m.transposed))
    return targets


def describe(layout: Layout) -> list[tuple[str, str, list[str]]]:
    """(lname, meaning, relative paths) rows for `laserkit targets`."""
    rows: list[tuple[str, str, list[str]]] = [("dont", ROLE_HELP["dont"], [])]
    for name, rels in layout.lnames().items():
        rows.append((name, ROLE_HELP.get(name, "this module only"), rels))
    return rows
