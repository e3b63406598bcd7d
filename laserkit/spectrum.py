"""Spectrum's files (SPEC §4): its SNR JSON, read and written, and the fine-tuning configs.

Spectrum (cognitivecomputations/spectrum) writes ``{module: {"snr": value, "type": type}}`` where
"snr" holds SNR / s_max, and a ``*_sorted.json`` that groups by type, ``{type: {module: value}}``
(sorted descending). Both are read here, as is the list variant ``{type: [{module: value}]}``.
NaN and Infinity are written as Python's json writes them (``NaN``, ``Infinity``), which is what
Spectrum's own published files contain.

The Axolotl YAML is byte-for-byte Spectrum's: per type in first-appearance order, the top
int(N_type · p / 100) modules by descending value, after the head and embedding lines. Those two
lines name the checkpoint's own tensors (Spectrum hard-codes ``lm_head`` and
``model.embed_tokens``); a head tied to the embedding (no tensor of its own) is noted in a comment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import LaserkitError

_EMBED = re.compile(r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in|tok_embeddings|"
                    r"token_embedding|shared)$")
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


def _number(v: object, where: str) -> float:
    if isinstance(v, dict) and "snr" in v:
        v = v["snr"]
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise LaserkitError(f"not a Spectrum SNR file: {where!r} has value {v!r}") from None


def select_top(entries: dict[str, dict], top_percent: float) -> dict[str, list[str]]:
    """Per type, in first-appearance order: the int(N·p/100) modules of highest value.

    Ties keep file order (Spectrum's stable sort); NaN ranks last, +∞ first.
    """
    if not 0 <= top_percent <= 100:
        raise LaserkitError(f"--top-percent must be between 0 and 100, got {top_percent:g}")
    by_type: dict[str, list[tuple[str, float]]] = {}
    for module, info in entries.items():
        by_type.setdefault(info["type"], []).append((module, info["snr"]))
    chosen: dict[str, list[str]] = {}
    for typ, items in by_type.items():
        ranked = sorted(items, key=lambda x: (math.isnan(x[1]), -x[1] if not math.isnan(x[1])
                                              else 0.0))
        chosen[typ] = [m for m, _ in ranked[:int(len(items) * top_percent / 100)]]
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


def _special_lines(entries: dict[str, dict], embed: str | None,
                   head: str | None) -> list[str]:
    """The head and embedding lines, from the scanned names (Spectrum's when none are known)."""
    if embed is None and head is None:
        embed, head = special_modules(entries)
    if embed is None and head is None:
        return [f"- ^{SPECTRUM_HEAD}.weight$", f"- ^{SPECTRUM_EMBED}.weight$"]
    lines = [f"- ^{head}.weight$"] if head else [f"# no separate head: tied to {embed}.weight"]
    if embed:
        lines.append(f"- ^{embed}.weight$")
    return lines


def axolotl_yaml(entries: dict[str, dict], top_percent: float, *, embed: str | None = None,
                 head: str | None = None) -> str:
    """Spectrum's ``unfrozen_parameters`` YAML for Axolotl."""
    lines = ["unfrozen_parameters:", *_special_lines(entries, embed, head)]
    for typ, modules in select_top(entries, top_percent).items():
        lines.append(f"# {typ} layers")
        lines.extend(f"- {m}" for m in modules)
    return "\n".join(lines) + "\n"


def llama_factory_yaml(entries: dict[str, dict], top_percent: float, *,
                       embed: str | None = None, head: str | None = None) -> str:
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
        raise LaserkitError(f"--top-percent {top_percent:g} selects no matrix: LLaMA-Factory "
                            "needs at least one lora_target")
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


FORMATS = {"axolotl": axolotl_yaml, "llama-factory": llama_factory_yaml}
