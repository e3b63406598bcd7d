"""Streaming scan, its stored results and resume, Spectrum's files, the CLI, and the real model."""

from __future__ import annotations

import json
import math
import struct
import sys

import pytest
import torch
import yaml
from conftest import make_tiny

import laserkit.spectral.scan as scan_mod
from laserkit.core.errors import LaserkitError
from laserkit.io.open import open_checkpoint
from laserkit.model.targets import names_layout, resolve
from laserkit.spectral.mp import matrix_stats
from laserkit.spectral.scan import load_scan, lowest_snr, scan
from laserkit.spectral.spectrum import (
    axolotl_named_yaml,
    axolotl_yaml,
    dumps_json,
    llama_factory_yaml,
    read_spectrum_json,
    select_top,
)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A 12-layer tiny llama saved whole and sharded, plus its state dict."""
    model = make_tiny("llama")
    base = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(base / "whole")
    model.save_pretrained(base / "sharded", max_shard_size="40KB")
    return base / "whole", base / "sharded", model.state_dict()


def _rows(result) -> list[dict]:
    return [r.row() for r in result.records]


def test_scan_matches_direct_svd_of_every_matrix(tiny_dirs):
    whole, _, sd = tiny_dirs
    res = scan(whole, progress=False, threads=1)
    expected = {k for k, v in sd.items() if v.dim() == 2 or k.endswith("norm.weight")}
    assert {r.name for r in res.records} == expected
    for r in res.records:
        w = sd[r.name]
        ref = matrix_stats(w if w.dim() == 2 else w.unsqueeze(0), method="svd")
        assert r.stats["n_above"] == ref["n_above"]
        assert r.stats["snr"] == pytest.approx(ref["snr"], rel=1e-9)
        assert r.stats["effective_rank"] == pytest.approx(ref["effective_rank"], rel=1e-9)
        torch.testing.assert_close(r.s, ref["s"], rtol=1e-9, atol=1e-12)
    by = {r.module: r for r in res.records}
    down = by["model.layers.10.mlp.down_proj"]
    assert (down.type, down.layer, down.role) == ("mlp.down_proj", 10, "fc_out")
    assert by["model.layers.1.self_attn.o_proj"].role == "out_proj"
    assert (by["lm_head"].type, by["lm_head"].layer) == ("lm_head", None)
    assert by["model.embed_tokens"].type == "model.embed_tokens"
    norm = by["model.layers.3.input_layernorm"]  # Spectrum scans it as a 1×n matrix
    assert (norm.type, norm.layer, norm.shape) == ("input_layernorm", 3, (1, 32))
    assert by["model.norm"].type == "model.norm" and not res.skipped  # no biases in llama


def test_sharded_checkpoint_gives_the_same_scan(tiny_dirs):
    whole, sharded, _ = tiny_dirs
    assert (sharded / "model.safetensors.index.json").exists()
    assert _rows(scan(sharded, progress=False)) == _rows(scan(whole, progress=False))


def test_filters_match_exactly(tiny_dirs):
    whole, _, _ = tiny_dirs
    res = scan(whole, progress=False, types="mlp", layers="1")
    assert {(r.layer, r.role) for r in res.records} == {(1, "fc_in"), (1, "fc_up"), (1, "fc_out")}
    res = scan(whole, progress=False, types="self_attn.q_proj,k_proj", layers="9-11")
    assert sorted((r.layer, r.type) for r in res.records) == [
        (i, t) for i in (9, 10, 11) for t in ("self_attn.k_proj", "self_attn.q_proj")
    ]
    res = scan(whole, progress=False, types="lm_head")
    assert [r.module for r in res.records] == ["lm_head"]
    with pytest.raises(LaserkitError, match="unknown module type 'mlpp'"):
        scan(whole, progress=False, types="mlpp")
    with pytest.raises(LaserkitError, match="out of range"):
        scan(whole, progress=False, layers="12")


def test_outputs_and_spectrum_json_round_trip(tiny_dirs, tmp_path):
    whole, _, _ = tiny_dirs
    res = scan(whole, tmp_path / "s", progress=False)
    out = tmp_path / "s"
    for name in ("scan.json", "snr_results.json", "scan.csv", "snr_heatmap.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "snr_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    flat = json.loads((out / "snr_results.json").read_text())
    assert flat == res.spectrum_entries()
    r = next(x for x in res.records if x.module == "model.layers.4.mlp.up_proj")
    assert flat[r.module] == {"snr": r.stats["snr_over_smax"], "type": "mlp.up_proj"}
    assert flat["model.layers.4.input_layernorm"] == {"snr": 1.0, "type": "input_layernorm"}
    csv_lines = (out / "scan.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(res.records)
    back = load_scan(out)
    assert _rows(back) == _rows(res)
    assert all(torch.equal(a.s, b.s) for a, b in zip(back.records, res.records, strict=True))
    # Spectrum's grouped layouts read back to the same entries
    grouped: dict[str, dict] = {}
    listed: dict[str, list] = {}
    for module, info in flat.items():
        grouped.setdefault(info["type"], {})[module] = info["snr"]
        listed.setdefault(info["type"], []).append({module: info["snr"]})
    assert read_spectrum_json(grouped) == flat
    assert read_spectrum_json(listed) == flat
    assert read_spectrum_json(out / "snr_results.json") == flat


def spectrum_reference_yaml(snr_data: dict, top_percent: float) -> str:
    """Spectrum's generate_unfrozen_params_yaml, restated to compare with (docs/methods.md)."""
    groups: dict[str, list] = {}
    for name, info in snr_data.items():
        groups.setdefault(info["type"], []).append((name, info["snr"]))
    text = "unfrozen_parameters:\n- ^lm_head.weight$\n- ^model.embed_tokens.weight$\n"
    for typ, layers in groups.items():
        ranked = sorted(layers, key=lambda x: x[1], reverse=True)
        text += f"# {typ} layers\n"
        for name, _ in ranked[: int(len(layers) * top_percent / 100)]:
            text += f"- {name}\n"
    return text


@pytest.mark.parametrize("percent", [25, 50, 100, 10])
def test_axolotl_yaml_is_spectrums_format(tiny_dirs, percent):
    whole, _, _ = tiny_dirs
    res = scan(whole, progress=False)
    entries = res.spectrum_entries()
    text = axolotl_yaml(entries, percent, embed="model.embed_tokens", head="lm_head")
    assert text == spectrum_reference_yaml(entries, percent)
    doc = yaml.safe_load(text)["unfrozen_parameters"]
    per_type = select_top(entries, percent)
    assert len(per_type["mlp.down_proj"]) == int(12 * percent / 100)
    assert len(doc) == 2 + sum(len(v) for v in per_type.values())


def test_yaml_names_come_from_the_checkpoint_and_handle_nan_inf():
    entries = {
        "transformer.wte": {"snr": 1.0, "type": "transformer.wte"},
        "transformer.h.0.mlp.c_fc": {"snr": math.nan, "type": "mlp.c_fc"},
        "transformer.h.1.mlp.c_fc": {"snr": 0.5, "type": "mlp.c_fc"},
        "transformer.h.2.mlp.c_fc": {"snr": math.inf, "type": "mlp.c_fc"},
        "transformer.h.3.mlp.c_fc": {"snr": 0.7, "type": "mlp.c_fc"},
    }
    text = axolotl_named_yaml(entries, 75)
    assert text.splitlines()[:3] == [
        "unfrozen_parameters:",
        "# no separate head: tied to transformer.wte.weight",
        "- ^transformer.wte.weight$",
    ]
    # Spectrum's sorted(reverse=True) leaves the NaN first (it compares false both ways)
    assert "- transformer.h.0.mlp.c_fc\n- transformer.h.2.mlp.c_fc\n- transformer.h.3" in text
    assert "h.1" not in text and "# transformer.wte layers" not in text  # none selected
    assert axolotl_yaml(entries, 75) == spectrum_reference_yaml(entries, 75)
    lf = yaml.safe_load(llama_factory_yaml(entries, 75))
    assert lf["finetuning_type"] == "lora"
    assert lf["lora_target"].split(",") == [f"transformer.h.{i}.mlp.c_fc" for i in (0, 2, 3)]
    assert lf["additional_target"] == "transformer.wte"
    assert json.loads(dumps_json(entries))["transformer.h.2.mlp.c_fc"]["snr"] == math.inf
    with pytest.raises(LaserkitError, match="top-percent"):
        select_top(entries, 150)


def test_interrupted_scan_resumes_to_the_same_result(tiny_dirs, tmp_path, monkeypatch):
    whole, _, _ = tiny_dirs
    full = scan(whole, tmp_path / "full", progress=False)
    real = scan_mod.matrix_stats
    calls = {"n": 0}

    def dying(w, *a, **k):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-scan
        return real(w, *a, **k)

    monkeypatch.setattr(scan_mod, "matrix_stats", dying)
    with pytest.raises(KeyboardInterrupt):
        scan(whole, tmp_path / "part", progress=False)
    assert len(list((tmp_path / "part" / "matrices").glob("*.safetensors"))) == 20
    assert not (tmp_path / "part" / "scan.json").exists()
    calls["n"] = -(10**6)  # no more failures; count what is recomputed
    resumed = scan(whole, tmp_path / "part", progress=False)
    assert resumed.reused == 20 and calls["n"] == -(10**6) + len(full.records) - 20
    assert _rows(resumed) == _rows(full)
    assert all(torch.equal(a.s, b.s) for a, b in zip(resumed.records, full.records, strict=True))
    assert (tmp_path / "part" / "scan.json").read_text() == (
        tmp_path / "full" / "scan.json"
    ).read_text()
    # a different checkpoint is refused in this directory: two models' results never mix
    other = make_tiny("llama", seed=1)
    other.save_pretrained(tmp_path / "other")
    before = {p: p.read_bytes() for p in (tmp_path / "part").rglob("*") if p.is_file()}
    with pytest.raises(LaserkitError, match="holds the scan of another checkpoint"):
        scan(tmp_path / "other", tmp_path / "part", progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "part").rglob("*") if p.is_file()} == before


def test_lowest_snr_candidates_resolve_exactly(tiny_dirs):
    whole, _, _ = tiny_dirs
    res = scan(whole, progress=False)
    cands = lowest_snr(res, 15)
    assert len(cands) == 15
    snrs = {r.module: r.stats["snr"] for r in res.records}
    values = [snrs[m] for m, _, _ in cands]
    assert values == sorted(values)
    pool = [r for r in res.records if r.layer is not None]
    assert values[-1] <= min(r.stats["snr"] for r in pool if r.module not in {c[0] for c in cands})
    layout = names_layout(open_checkpoint(whole).shapes())
    for module, layer, lname in cands:
        assert [t.module for t in resolve(layout, lname, layer)] == [module]
    only_mlp = lowest_snr(res, 4, types="mlp")
    assert all(lname in ("fc_in", "fc_up", "fc_out") for _, _, lname in only_mlp)


def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tiny_dirs, tmp_path):
    import shutil

    whole, _, _ = tiny_dirs
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    f = cut / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(LaserkitError, match="truncated safetensors file"):
        scan(cut, progress=False)
    bad = tmp_path / "garbled"
    shutil.copytree(whole, bad)
    f = bad / "model.safetensors"
    data = bytearray(f.read_bytes())
    (hlen,) = struct.unpack("<Q", data[:8])
    data[8 : 8 + 20] = b"\x00garbage-not-json!!!"
    f.write_bytes(bytes(data))
    with pytest.raises(LaserkitError, match="corrupt safetensors file"):
        open_checkpoint(bad)
    with pytest.raises(LaserkitError, match="does not exist"):
        open_checkpoint(tmp_path / "nope" / "x")


def test_cli_scan_spectrum_and_one_line_errors(tiny_dirs, tmp_path, monkeypatch, capsys):
    from laserkit.cli import main
    from laserkit.cli.common import console
    from laserkit.cli.output import results

    whole, _, _ = tiny_dirs
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.setattr(results, "width", 250)

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["laserkit", *argv])
        try:
            main()
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    out = tmp_path / "scan"
    assert (
        run(
            "scan",
            str(whole),
            "--out",
            str(out),
            "--types",
            "mlp,attn",
            "--layers",
            "0-3",
            "--table",
            "full",
            "--no-plot",
        )
        == 0
    )
    table = capsys.readouterr().out  # the scan's table is its result: stdout
    assert "model.layers.3.mlp.down_proj" in table and "SNR/s_max" in table
    assert run("spectrum", str(out), "--top-percent", "25") == 0
    text = (out / "unfrozen_parameters_25percent.yaml").read_text()
    assert text.startswith("unfrozen_parameters:\n- ^lm_head.weight$\n")
    assert text.count("\n- model.layers.") == 7  # int(4·25/100) = 1 per type, 7 types
    assert run("spectrum", str(out), "--top-percent", "50", "--format", "llama-factory") == 0
    lf = yaml.safe_load((out / "llama_factory_50percent.yaml").read_text())
    assert len(lf["lora_target"].split(",")) == 14
    capsys.readouterr()
    assert run("scan", str(whole), "--types", "nope") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("laserkit: error: unknown module type 'nope'") and "\n" not in err


@pytest.mark.slow
def test_real_default_model_whole_scan(default_model_dir, tmp_path):
    res = scan("default", tmp_path / "smol", progress=False, threads=1)
    assert len(res.records) == 30 * 9 + 2  # 2 norms a block and model.norm; no lm_head tensor
    assert not res.skipped
    by = {r.module: r for r in res.records}
    for name in ("model.layers.0.self_attn.k_proj", "model.layers.29.mlp.down_proj"):
        ref = matrix_stats(open_checkpoint(default_model_dir).get(f"{name}.weight"), method="svd")
        assert by[name].stats["n_above"] == ref["n_above"]
        assert by[name].stats["snr"] == pytest.approx(ref["snr"], rel=1e-9)
    assert by["model.layers.0.self_attn.k_proj"].shape == (192, 576)
    assert all(
        math.isfinite(r.stats["snr"])
        for r in res.records  # norms: 1 value, no noise
        if r.layer is not None and min(r.shape) > 1
    )
    assert math.isinf(by["model.embed_tokens"].stats["snr"])  # IQR-τ below every value
    flat = json.loads((tmp_path / "smol" / "snr_results.json").read_text())
    # Spectrum's 273: 30 × (7 matrices + 2 norms), model.norm, the embedding and the tied head
    assert len(flat) == 273 and flat["model.layers.7.mlp.gate_proj"]["type"] == "mlp.gate_proj"
    assert flat["lm_head"] == flat["model.embed_tokens"] | {"type": "lm_head"}
    text = axolotl_named_yaml(res.spectrum_entries(), 25, embed="model.embed_tokens")
    lines = text.splitlines()
    assert lines[1:3] == [
        "# no separate head: tied to model.embed_tokens.weight",
        "- ^model.embed_tokens.weight$",
    ]
    assert sum(1 for x in lines if x.startswith("- model.layers.")) == 9 * int(30 * 25 / 100)
    from laserkit.cli.scan import _summary_table

    table = _summary_table(res)
    assert table.row_count == 11
    assert (tmp_path / "smol" / "snr_heatmap.png").stat().st_size > 10_000


def test_gguf_streams_the_same_matrices_as_its_safetensors_conversion(default_model_dir):
    """The packaged GGUF file, read tensor by tensor (names mapped, q/k un-permuted), gives the
    statistics of the converted safetensors copy: same names, layers, roles and numbers."""
    from laserkit.io.source import default_gguf

    pick = dict(types="fc_in,q_proj,k_proj", layers="0,29", progress=False, plots=False, threads=1)
    from_gguf = {r.module: r for r in scan(str(default_gguf()), **pick).records}
    from_dir = {r.module: r for r in scan(str(default_model_dir), **pick).records}
    assert sorted(from_gguf) == sorted(from_dir) and len(from_dir) == 6
    for name, ref in from_dir.items():
        got = from_gguf[name]
        assert (got.layer, got.type, got.shape) == (ref.layer, ref.type, ref.shape)
        assert got.stats["n_above"] == ref.stats["n_above"]
        assert got.stats["snr"] == pytest.approx(ref.stats["snr"], rel=1e-9)
    gguf, st = open_checkpoint(default_gguf()), open_checkpoint(default_model_dir)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.gate_proj.weight"):
        assert torch.equal(gguf.get(name).float(), st.get(name).float()), name  # rows in HF order
