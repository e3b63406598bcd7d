"""The kept rank and ρ from --rate side by side with a transcription of the reference
(pratyushasharma/laser d391375: gptj_laser.py line 124 ``(10 - rate) * 0.1``,
matrix_utils.py lines 42–43 ``desired_rank = int(max_rank * k)``)."""

from __future__ import annotations

import itertools

import pytest
import torch

from laserkit.interventions import Intervention, compute, kept_rank, rho_from_rate
from laserkit.interventions.rank_reduction import legacy_kept_rank

RATES = [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 9.5, 9.9, 9.95, 9.99, 10.0]
WIDTHS = [1, 2, 3, 7, 10, 20, 90, 100, 576, 1000, 1024, 1536, 2048, 4096, 5120, 11008, 16384]


def reference_rank(shape: tuple[int, int], rate: float) -> int:
    k = (10 - rate) * 0.1
    max_rank = min(shape[0], shape[1])
    return int(max_rank * k)


@pytest.mark.parametrize("rate", RATES)
def test_rank_from_rate_is_the_reference_s_on_every_width(rate):
    for m, n in itertools.product(WIDTHS, [WIDTHS[-1], 3 * WIDTHS[-1]]):
        assert kept_rank(m, n, rho_from_rate(rate)) == reference_rank((m, n), rate), (m, n, rate)


def test_edge_cases_named_in_the_issue():
    assert kept_rank(1000, 4000, rho_from_rate(9.9)) == 9  # laserkit ≤ 0.1.0 kept 10
    assert legacy_kept_rank(1000, 4000, 1 - 0.1 * 9.9) == 10
    assert kept_rank(100, 100, 0.29) == int(100 * 0.29) == 28
    assert kept_rank(90, 90, 0.7) == 62 and legacy_kept_rank(90, 90, 0.7) == 63
    assert kept_rank(7, 5, 1.0) == 5 and kept_rank(7, 5, 0.0) == 0


@pytest.mark.parametrize("rho", [0.7, 0.29, 0.01, 0.99])
def test_float_rho_on_edge_shapes(rho):
    for m, n in [(90, 300), (100, 100), (1000, 7), (1, 50)]:
        want = int(min(m, n) * rho)
        assert kept_rank(m, n, rho) == want


def test_the_applied_rank_is_the_kept_rank():
    W = torch.randn(100, 130, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, info = compute(W, Intervention(rho=0.29))
    assert info["rank"] == 28 and torch.linalg.matrix_rank(out) == 28


def test_lname_all_is_the_reference_s_every_attention_and_mlp_matrix():
    """llama2_laser.py convert_name("all"): gate, up, down, k, q, v, o of the layer."""
    from conftest import make_tiny

    from laserkit.model.targets import model_layout, resolve

    layout = model_layout(make_tiny("llama"))
    got = {
        t.module.rsplit(".", 2)[-2] + "." + t.module.rsplit(".", 1)[-1]
        for t in resolve(layout, "all", 3)
    }
    assert got == {
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
        "self_attn.k_proj",
        "self_attn.q_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
    }
    assert {t.layer for t in resolve(layout, "all", 3)} == {3}
