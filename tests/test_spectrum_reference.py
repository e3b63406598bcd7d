"""laserkit's Spectrum files side by side with a transcription of Spectrum's own code
(cognitivecomputations/spectrum 0ed1756, spectrum.py: get_weight_types lines 54–62,
sort_weight_types 76–83, calculate_snr_for_layer 85–133, generate_unfrozen_params_yaml
184–210; the older empty-noise rule from 60c0900)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny

from laserkit.spectral.scan import scan
from laserkit.spectral.spectrum import axolotl_yaml

LASERKIT = str(Path(sys.executable).with_name("laserkit"))


# --------------------------------------------------------------------------- transcriptions


def spectrum_weight_types(model) -> list[str]:
    """get_weight_types then sort_weight_types (the dialog's default selection, in its order)."""
    types = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        if any(hasattr(module, a) for a in ["weight", "bias", "inv_freq"]):
            idx = next((i for i, p in enumerate(parts) if p.isdigit()), -1)
            types.add(".".join(parts[idx + 1 :]) if idx != -1 else name)
    cats: dict[str, list[str]] = {}
    for wt in types:
        cats.setdefault(wt.split(".")[0], []).append(wt)
    return [wt for _, v in sorted(cats.items(), key=lambda kv: kv[0]) for wt in sorted(v)]


def spectrum_scan(model, empty_noise: str = "sum") -> dict:
    """calculate_snr_for_layer over every type: {module: {"snr": SNR/s_max, "type": type}}.
    ``empty_noise="inf"`` is the rule before e064db4 (noise = S[S <= τ].sum(), SNR = ∞ at 0)."""
    snr: dict[str, dict] = {}
    for layer_type in spectrum_weight_types(model):
        for name, module in model.named_modules():
            if layer_type not in name or not hasattr(module, "weight"):
                continue
            w = module.weight.detach().float()
            if w.ndim < 2:
                w = w.unsqueeze(0)
            S = torch.linalg.svdvals(w)
            sigma = (torch.quantile(S, 0.75) - torch.quantile(S, 0.25)) / 1.349
            n, m = w.shape[-2:]
            beta = n / m if n < m else m / n
            tau = sigma * np.sqrt((1 + np.sqrt(beta)) ** 2)
            if empty_noise == "sum":
                sig, noi = S > tau, ~(S > tau)
                signal = S[sig].sum() if sig.any() else torch.tensor(0.0)
                noise = S[noi].sum() if noi.any() else torch.tensor(1.0)
            else:
                signal, noise = S[S > tau].sum(), S[S <= tau].sum()
            ratio = (signal / noise if noise != 0 else float("inf")) / S[0]
            snr[name] = {"type": layer_type, "snr": float(ratio)}
    return snr


def spectrum_yaml(json_text: str, top_percent: int) -> str:
    """generate_unfrozen_params_yaml, reading the JSON file as Spectrum reads it."""
    snr_data = json.loads(json_text)
    groups: dict[str, list] = {}
    for layer_name, info in snr_data.items():
        groups.setdefault(info["type"], []).append((layer_name, info["snr"]))
    out = "unfrozen_parameters:\n- ^lm_head.weight$\n- ^model.embed_tokens.weight$\n"
    for layer_type, layers in groups.items():
        ranked = sorted(layers, key=lambda x: x[1], reverse=True)
        out += f"# {layer_type} layers\n"
        for name, _ in ranked[: int(len(layers) * top_percent / 100)]:
            out += f"- {name}\n"
    return out


def _same_entries(ours: dict, theirs: dict, rel: float) -> None:
    assert list(ours) == list(theirs)  # same modules, same order
    assert [v["type"] for v in ours.values()] == [v["type"] for v in theirs.values()]
    for k in ours:
        a, b = ours[k]["snr"], theirs[k]["snr"]
        assert (math.isinf(a) and math.isinf(b)) or a == pytest.approx(b, rel=rel), k


# --------------------------------------------------------------------------- toy scans


@pytest.mark.parametrize("family,seed", [("llama", 0), ("llama", 1), ("qwen2", 2), ("mistral", 3)])
@pytest.mark.parametrize("empty_noise", ["sum", "inf"])
def test_toy_scans_give_spectrums_entries_and_yaml(tmp_path, family, seed, empty_noise):
    model = make_tiny(family, seed=seed, tie_word_embeddings=False)
    with torch.no_grad():  # norm scales of random size, so the 1-D entries are not all equal
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_()
    model.save_pretrained(tmp_path / "m")
    res = scan(tmp_path / "m", tmp_path / "s", progress=False, plots=False, threads=1)
    ours = res.spectrum_entries(empty_noise)
    theirs = spectrum_scan(model, empty_noise)
    _same_entries(ours, theirs, rel=1e-4)
    on_disk = (tmp_path / "s" / "snr_results.json").read_text()
    for pct in (10, 25, 50, 75, 100):
        text = axolotl_yaml(ours, pct)
        assert text == spectrum_yaml(json.dumps(ours, indent=4), pct)
        if empty_noise == "sum":
            assert text == spectrum_yaml(on_disk, pct)


def test_empty_noise_rules_differ_where_they_should(tmp_path):
    model = make_tiny("llama", tie_word_embeddings=False)
    model.save_pretrained(tmp_path / "m")
    res = scan(tmp_path / "m", progress=False, plots=False, threads=1)
    cur, old = res.spectrum_entries("sum"), res.spectrum_entries("inf")
    norms = [k for k, v in cur.items() if v["type"] == "input_layernorm"]
    assert norms and all(cur[k]["snr"] == 1.0 and math.isinf(old[k]["snr"]) for k in norms)


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_default_model_scan_is_spectrums(default_loaded, tmp_path):
    """`laserkit scan default` then `laserkit spectrum`: 273 entries as Spectrum's code lists
    them (its scan transcribed on the same weights), and the YAML its selection writes."""
    out = tmp_path / "scan"
    subprocess.run(
        [
            LASERKIT,
            "scan",
            "default",
            "--out",
            str(out),
            "--no-plot",
            "--threads",
            "1",
            "--lowest",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    ours_text = (out / "snr_results.json").read_text()
    ours = json.loads(ours_text)
    theirs = spectrum_scan(default_loaded.model)
    assert len(ours) == len(theirs) == 273
    _same_entries(ours, theirs, rel=1e-3)
    for pct in (25, 50):
        done = subprocess.run(
            [LASERKIT, "spectrum", str(out), "--top-percent", str(pct)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        written = (out / f"unfrozen_parameters_{pct}percent.yaml").read_text()
        assert written == spectrum_yaml(ours_text, pct)
        n = sum(1 for x in written.splitlines() if x.startswith("- "))
        assert f"{n - 2} modules selected" in " ".join((done.stdout + done.stderr).split())
    # Spectrum's own values select the same modules at 50% (no near-tie flips the choice)
    assert written == spectrum_yaml(json.dumps(theirs), 50)
    assert "- model.layers.0.input_layernorm\n" in written  # Spectrum's published 50 % files


def test_spectrum_cli_refuses_an_unknown_rule_in_one_line(tmp_path):
    (tmp_path / "snr.json").write_text(json.dumps({"a.0.x": {"snr": 1.0, "type": "x"}}))
    done = subprocess.run(
        [LASERKIT, "spectrum", str(tmp_path / "snr.json"), "--empty-noise", "zero"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("laserkit: error: unknown --empty-noise 'zero'")
    assert done.stderr.count("\n") == 1
