"""Spectrum's files (docs/methods.md, "Spectrum"): its SNR JSON, read and written, and the
fine-tuning configs.

Spectrum (cognitivecomputations/spectrum) writes ``{module: {"snr": value, "type": type}}`` where
"snr" holds SNR / s_max, and a ``*_sorted.json`` that groups by type, ``{type: {module: value}}``
(sorted descending). Both are read here, as is the list variant ``{type: [{module: value}]}``.
NaN and Infinity are written as Python's json writes them (``NaN``, ``Infinity``), which is what
Spectrum's own published files contain.

The default Axolotl YAML (``axolotl``) is byte-for-byte what Spectrum's
``generate_unfrozen_params_yaml`` (spectrum.py at 0ed1756, lines 184–210) writes from the same
SNR entries: its two hard-coded lines ``^lm_head.weight$`` and ``^model.embed_tokens.weight$``,
then per type in the entries' order a ``# <type> layers`` heading (also for a type of which none
is selected) and the top int(N_type · p / 100) modules by ``sorted(..., reverse=True)`` (ties keep
file order). ``axolotl-named`` is laserkit's variant: the head and embedding lines name the
checkpoint's own tensors (a tied head is noted in a comment) and types with none selected get no
heading.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError

_EMBED = re.compile(
    r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in|tok_embeddings|"
    r"token_embedding|shared)$"
)
_HEAD = re.compile(r"(?:^|\.)(?:lm_head|embed_out|output)$|^lm_head$")
SPECTRUM_HEAD, SPECTRUM_EMBED = "lm_head", "model.embed_tokens"


def dumps_json(obj: object) -> str:
    """JSON as Spectrum writes it (indent 4, NaN/Infinity literals allowed)."""
    return json.dumps(obj, indent=4, allow_nan=True)


def type_order(types: Iterable[str]) -> list[str]:
    """Spectrum's order of module types: by first dotted component, then by name."""
    return sorted(set(types), key=lambda t: (t.split(".")[0], t))


def read_spectrum_json(source: str | Path | dict) -> dict[str, dict]:
    """Spectrum's flat layout from any of its published layouts: {module: {snr, type}}."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LaserkitError(f"cannot read Spectrum JSON {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise LaserkitError("not a Spectrum SNR file: expected a non-empty JSON object")
    out: dict[str, dict] = {}
    for key, value in data.items():
        if isinstance(value, dict) and "snr" in value:  # flat: {module: {"snr", "type"}}
            out[key] = {"snr": _number(value["snr"], key), "type": str(value.get("type", key))}
        elif isinstance(value, dict):  # grouped: {type: {module: snr}}
            for module, v in value.items():
                out[module] = {"snr": _number(v, module), "type": key}
        elif isinstance(value, list):  # grouped list: {type: [{module: snr}, ...]}
            for item in value:
                pairs = item.items() if isinstance(item, dict) else [tuple(item)]
                for module, v in pairs:
                    out[str(module)] = {"snr": _number(v, module), "type": key}
        else:
            raise LaserkitError(f"not a Spectrum SNR file: unexpected value for {key!r}")
    return out


def _number(v: Any, where: str) -> float:  # v: a JSON value; float() decides
    if isinstance(v, dict) and "snr" in v:
        v = v["snr"]
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise LaserkitError(f"not a Spectrum SNR file: {where!r} has value {v!r}") from None


def select_top(entries: dict[str, dict], top_percent: float) -> dict[str, list[str]]:
    """Per type, in first-appearance order: the int(N·p/100) modules of highest value, ranked by
    Python's stable ``sorted(key=value, reverse=True)`` exactly as Spectrum ranks them (ties keep
    file order; NaN compares false both ways, so it stays where the sort leaves it, as there)."""
    if not 0 <= top_percent <= 100:
        raise LaserkitError(f"--top-percent must be between 0 and 100, got {top_percent:g}")
    by_type: dict[str, list[tuple[str, float]]] = {}
    for module, info in entries.items():
        by_type.setdefault(info["type"], []).append((module, info["snr"]))
    chosen: dict[str, list[str]] = {}
    for typ, items in by_type.items():
        ranked = sorted(items, key=lambda x: x[1], reverse=True)
        chosen[typ] = [m for m, _ in ranked[: int(len(items) * top_percent / 100)]]
    return chosen


def special_modules(modules: Iterable[str]) -> tuple[str | None, str | None]:
    """(embedding, head) module names among a checkpoint's modules outside the blocks."""
    embed = head = None
    for m in modules:
        if re.search(r"\.\d+\.", f".{m}."):  # inside a block: never the embedding or head
            continue
        if embed is None and _EMBED.search(m):
            embed = m
        elif head is None and _HEAD.search(m):
            head = m
    return embed, head


def _special_lines(entries: dict[str, dict], embed: str | None, head: str | None) -> list[str]:
    """The head and embedding lines, from the scanned names (Spectrum's when none are known)."""
    if embed is None and head is None:
        embed, head = special_modules(entries)
    if embed is None and head is None:
        return [f"- ^{SPECTRUM_HEAD}.weight$", f"- ^{SPECTRUM_EMBED}.weight$"]
    lines = [f"- ^{head}.weight$"] if head else [f"# no separate head: tied to {embed}.weight"]
    if embed:
        lines.append(f"- ^{embed}.weight$")
    return lines


def axolotl_yaml(
    entries: dict[str, dict],
    top_percent: float,
    *,
    embed: str | None = None,
    head: str | None = None,
) -> str:
    """Spectrum's ``unfrozen_parameters`` YAML for Axolotl, byte for byte (``embed``/``head``
    are accepted for a common signature and ignored: Spectrum hard-codes both lines)."""
    lines = ["unfrozen_parameters:", f"- ^{SPECTRUM_HEAD}.weight$", f"- ^{SPECTRUM_EMBED}.weight$"]
    for typ, modules in select_top(entries, top_percent).items():
        lines.append(f"# {typ} layers")
        lines.extend(f"- {m}" for m in modules)
    return "\n".join(lines) + "\n"


def axolotl_named_yaml(
    entries: dict[str, dict],
    top_percent: float,
    *,
    embed: str | None = None,
    head: str | None = None,
) -> str:
    """The same selection with the head and embedding lines naming the checkpoint's tensors,
    and no heading for a type of which none is selected."""
    lines = ["unfrozen_parameters:", *_special_lines(entries, embed, head)]
    for typ, modules in select_top(entries, top_percent).items():
        if modules:
            lines.append(f"# {typ} layers")
            lines.extend(f"- {m}" for m in modules)
    return "\n".join(lines) + "\n"


def llama_factory_yaml(
    entries: dict[str, dict],
    top_percent: float,
    *,
    embed: str | None = None,
    head: str | None = None,
) -> str:
    """The same selection for LLaMA-Factory, as exact LoRA targets plus full embedding/head.

    LLaMA-Factory's ``finetuning_type: freeze`` unfreezes whole sub-blocks (``mlp``,
    ``self_attn``) of the last or first n layers; its ``freeze_trainable_modules`` rejects paths
    like ``mlp.down_proj``, so Spectrum's per-(layer, module) choice cannot be written in freeze
    mode. ``lora_target`` is matched by peft against full module names, so listing them trains
    exactly the selected matrices; ``additional_target`` trains the embedding and head in full.
    """
    if embed is None and head is None:
        embed, head = special_modules(entries)
    chosen = [m for ms in select_top(entries, top_percent).values() for m in ms]
    if not chosen:
        raise LaserkitError(
            f"--top-percent {top_percent:g} selects no matrix: LLaMA-Factory "
            "needs at least one lora_target"
        )
    extra = [m for m in (embed, head) if m]
    lines = [
        f"# Spectrum selection: top {top_percent:g}% of each module type by SNR/s_max "
        "(written by laserkit).",
        "# LLaMA-Factory's freeze mode can only unfreeze whole mlp/self_attn blocks of the last or",
        "# first n layers, so the selected matrices are trained as LoRA adapters on exactly those",
        "# modules (lora_target matches full module names), with the embedding and head trained",
        "# in full (additional_target). Merge this into your LLaMA-Factory training YAML.",
        "finetuning_type: lora",
        f"lora_target: {','.join(chosen)}",
    ]
    if extra:
        lines.append(f"additional_target: {','.join(extra)}")
    if embed and not head:
        lines.append(f"# no separate head: tied to {embed}.weight")
    for typ, modules in select_top(entries, top_percent).items():
        lines.append(f"# {typ}: {len(modules)} selected")
    return "\n".join(lines) + "\n"


FORMATS = {
    "axolotl": axolotl_yaml,
    "axolotl-named": axolotl_named_yaml,
    "llama-factory": llama_factory_yaml,
}

# A matrix with no singular value at or below τ (empty noise): what its SNR/s_max is.
EMPTY_NOISE: dict[str, str] = {
    "sum": "current Spectrum (since e064db4, April 2025): the empty noise sum counts as 1, so "
    "SNR/s_max = ΣS/s_max (a 1-D weight: 1)",
    "inf": "Spectrum before April 2025: SNR = ∞, ranked above every finite value",
}


def check_empty_noise(rule: str) -> str:
    if rule not in EMPTY_NOISE:
        raise LaserkitError(f"unknown --empty-noise {rule!r}: use {', '.join(EMPTY_NOISE)}")
    return rule


def summary_line(target: object, entries: dict[str, dict], top_percent: float, fmt: str) -> str:
    """What was written, counted as the file counts it: the selected modules plus the head and
    embedding lines, and which types had none selected."""
    chosen = select_top(entries, top_percent)
    picked = sum(len(v) for v in chosen.values())
    empty = [t for t, v in chosen.items() if not v]
    text = f"wrote {target}: {picked} modules selected (top {top_percent:g}% per type)"
    if fmt == "axolotl":
        text += " + the 2 head and embedding lines Spectrum always writes"
    if empty:
        text += f"; none selected of {', '.join(empty)}" + (
            " (Spectrum writes their headings anyway)" if fmt == "axolotl" else ""
        )
    return text
