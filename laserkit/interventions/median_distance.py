"""The exact median of the distances between the rows of a matrix: numpy's median of scipy's
pdist, without scipy and without a sort of all pairs (docs/methods.md, "Vendi": `--bandwidth
median`). Vendi's kernel takes it as its bandwidth σ (`interventions/vendi.py`).

Why a module of its own: it is one exact selection over m(m − 1)/2 values, with its own error
analysis (the Gram form against the difference form) and routes (a float32 product, a float64
one, all pairs), and nothing in it knows about the greedy."""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = float(torch.finfo(torch.float64).eps)
MEDIAN_ROWS = 2048  # median bandwidth: all pairs of up to this many rows, else a seeded sample
MEDIAN_SEED = 0
MEDIAN_BLOCKS = 8  # row blocks of the median's triangular distances (`upper_sq`)
NEAR_SHARE = 256  # float32 route: at most p²/NEAR_SHARE pairs get their difference form
NEAR_FLOOR = 256  # (or this many, for small p)
_DIFF_BYTES = 64 << 20  # difference-form values in chunks of this many bytes of row pairs


def pairwise_sq(X: torch.Tensor) -> torch.Tensor:
    """All squared distances ‖x_i − x_j‖² (m × m, Gram form, clamped at 0): for inspection
    (bench/bench_vendi.py --part bandwidth); the median uses `upper_sq`."""
    sq = (X * X).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * (X @ X.T)).clamp_min(0)


def _median_sample(X: torch.Tensor) -> torch.Tensor:
    """The rows the median is taken over: all, or MEDIAN_ROWS drawn without replacement by a
    CPU generator seeded with MEDIAN_SEED (the same rows on every machine), in row order."""
    m = X.shape[0]
    if m <= MEDIAN_ROWS:
        return X
    g = torch.Generator().manual_seed(MEDIAN_SEED)
    idx = torch.randperm(m, generator=g)[:MEDIAN_ROWS].sort().values
    return X[idx.to(X.device)]


def median_distance(W: torch.Tensor) -> float:
    """The median of ‖w_i − w_j‖ over the pairs i < j of (a sample of) the rows, each distance
    in float64 from the differences (as scipy's pdist); for an even count of pairs the mean of
    the two middle distances (numpy.median), docs/methods.md "Vendi".

    Routes, each certified by its rank checks or left for the next: the Gram form in float32
    (`_float32_rows`), in float64, then every pair's difference."""
    S = _median_sample(W.detach())
    p = S.shape[0]
    if p < 2:
        return 0.0
    Y = S.to(torch.float64)
    sq = (Y * Y).sum(1)
    mid = None
    Y32 = _float32_rows(S, Y)
    if Y32 is not None:
        most = max(NEAR_FLOOR, p * p // NEAR_SHARE)  # beyond: the float64 product is cheaper
        mid = _median_filtered(Y, sq, upper_sq(Y32), most=most)
    if mid is None:
        mid = _median_filtered(Y, sq, upper_sq(Y))
    if mid is not None:
        return (math.sqrt(mid[0]) + math.sqrt(mid[1])) / 2
    # a rank check failed: every pair's float64 distance decides
    D = torch.cdist(Y, Y, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(len(Y), len(Y), 1, device=Y.device)
    d = D[iu[0], iu[1]].sort().values
    lo, hi = _middle_ranks(len(d))
    return (float(d[lo]) + float(d[hi])) / 2


def _float32_rows(S: torch.Tensor, Y: torch.Tensor) -> torch.Tensor | None:
    """The rows in float32 when the Gram form may run in float32, else None: their values are
    float32 numbers (weights stored in float32, bfloat16 or float16 are; float64 ones are
    checked), on the CPU, with float32 products at full precision (not after
    `torch.set_float32_matmul_precision("high")`: TF32 or bfloat16 products would break the
    error bound). ``S``: the rows as stored, ``Y``: in float64.

    Why: the product is most of the median's time, and float32 halves it (twice the values
    per vector lane); the bound of each Gram-form value grows by eps32/eps64 = 2²⁹ and on real
    rows still leaves a few hundred pairs in a million for the difference form
    (`_middle_near`). On a GPU the float64 product is fast enough and TF32 is common."""
    if S.device.type != "cpu" or torch.get_float32_matmul_precision() != "highest":
        return None
    if S.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return S.to(torch.float32)
    Y32 = Y.to(torch.float32)
    return Y32 if torch.equal(Y32.to(torch.float64), Y) else None


def median_sq_distance(W: torch.Tensor) -> float:
    """The square of `median_distance`."""
    return median_distance(W) ** 2


def _middle_ranks(count: int) -> tuple[int, int]:
    """0-based ranks of the one or two middle values of ``count`` sorted values."""
    h = count // 2
    return (h - 1 if count % 2 == 0 else h), h


def _kth(v: torch.Tensor, i: int, j: int) -> tuple[float, float]:
    """The values of 0-based ranks i ≤ j of v (flattened): on the CPU one numpy partition for
    both (a third of two torch selections on ~60 k values), elsewhere two selections."""
    if v.device.type == "cpu":
        part = np.partition(v.numpy().reshape(-1), (i, j) if j != i else i)
        return float(part[i]), float(part[j])
    return float(v.kthvalue(i + 1).values), float(v.kthvalue(j + 1).values)


def _bracket(d: torch.Tensor, lo: int, hi: int, margin: float, p: int) -> tuple[float, float]:
    """Values that bracket ranks lo..hi of d (p × p, flattened) with high probability: a
    stride sample's quantiles widened by ``margin``; the caller checks that they do.
    The stride is prime to p, so the sample visits every column (a stride dividing p took
    one column in 32 of a 1024-row matrix, whose upper triangle it misrepresents)."""
    stride = max(1, len(d) // 32768)
    while math.gcd(stride, p) != 1:
        stride += 1
    sample = d[::stride]
    k = len(sample)
    # a selection of both ranks, not a sort
    ia = max(0, int((lo / len(d)) * k) - int(margin * k))
    ib = min(k - 1, int((hi / len(d)) * k) + int(margin * k) + 1)
    return _kth(sample, ia, ib)


def _window(
    d: torch.Tensor, lo: int, hi: int, delta: float, p: int
) -> tuple[torch.Tensor, int, float, float] | None:
    """The positions of d within 3δ of the values of ranks lo..hi (or a wider window around
    them), how many values lie below it, and its ends as compared (`_in_range`): from
    `_bracket`, or when its sample missed, from the exact order statistics."""
    for exact in (False, True):
        if exact:
            a, b = _kth(d, lo, hi)
        else:
            a, b = _bracket(d, lo, hi, 0.012, p)
        pos, below, a_eff, b_eff = _in_range(d, a - 3 * delta, b + 3 * delta)
        if below <= lo and hi - below < len(pos):
            return pos, below, a_eff, b_eff
    return None


def _in_range(d: torch.Tensor, a: float, b: float) -> tuple[torch.Tensor, int, float, float]:
    """The positions of d's values in [a, b], how many lie below a (d holds no NaN), and the
    ends as compared: a value counted below is under a_eff, one beyond the window over b_eff
    (whether the comparison rounds a and b to d's dtype or not).

    On the CPU in numpy, and the count from the same comparison: each pass reads all p² values,
    and numpy's nonzero is about half of torch's on 2.4 M values."""
    if d.device.type == "cpu":
        dn = d.numpy()
        keep = dn >= a
        below = dn.size - int(np.count_nonzero(keep))
        keep &= dn <= b
        a_d, b_d = float(dn.dtype.type(a)), float(dn.dtype.type(b))
        return torch.from_numpy(np.flatnonzero(keep)), below, max(a, a_d), min(b, b_d)
    ge = d >= a
    below = d.numel() - int(torch.count_nonzero(ge))
    a_d, b_d = (float(torch.tensor(v, dtype=d.dtype)) for v in (a, b))
    return (ge & (d <= b)).nonzero()[:, 0], below, max(a, a_d), min(b, b_d)


def upper_sq(Y: torch.Tensor) -> torch.Tensor:
    """D[i, j] = ‖y_i‖² + ‖y_j‖² − 2 y_i·y_j for j > i, +inf on and below the diagonal (Y's
    dtype, p × p): the Gram form of every pair's squared distance.

    Why by row blocks: block i needs only its products with the rows from i on, so
    MEDIAN_BLOCKS blocks compute (b + 1)/(2b) of the full product (56 % for 8); this product
    is most of the median's time."""
    p = Y.shape[0]
    sq = (Y * Y).sum(1)
    D = torch.empty(p, p, dtype=Y.dtype, device=Y.device)
    step = -(-p // max(1, min(MEDIAN_BLOCKS, p)))
    lower = torch.ones(step, step, dtype=torch.bool, device=Y.device).tril_()
    for i0 in range(0, p, step):
        i1 = min(p, i0 + step)
        base = sq[i0:i1, None] + sq[None, i0:]
        torch.addmm(base, Y[i0:i1], Y[i0:].T, alpha=-2, out=D[i0:i1, i0:])
        D[i0:i1, :i0] = math.inf
        D[i0:i1, i0:i1].masked_fill_(lower[: i1 - i0, : i1 - i0], math.inf)
    return D


def _gram_error(n: int, D: torch.Tensor) -> float:
    """c such that a Gram-form value of ``D`` (`upper_sq` in D's dtype) and the float64
    difference-form value of the same pair differ by at most c·(‖y_i‖² + ‖y_j‖²).

    Worst-case bounds, u = eps/2 of the Gram form's dtype: each ‖y‖² and each dot product
    of length n is off by n·u·(its terms' sum of magnitudes), the two additions by u each
    on values ≤ 2(‖y_i‖² + ‖y_j‖²): (2n + 3)·u ≤ (n + 2)·eps. The difference form, a
    float64 sum of n squared differences: (n + 3)·eps64 (taken n + 6). 1 % on top for the
    rounding of the bound itself."""
    eps = float(torch.finfo(D.dtype).eps)
    return 1.01 * ((n + 2) * eps + (n + 6) * EPS)


def _median_filtered(
    Y: torch.Tensor, sq: torch.Tensor, D: torch.Tensor, most: int | None = None
) -> tuple[float, float] | None:
    """The two middle values (equal for an odd count) of ‖y_i − y_j‖² over i < j, each the
    float64 sum of the squared differences, from the Gram form ‖y_i‖² + ‖y_j‖² − 2 G[i, j] for
    all pairs (``D``, `upper_sq`, float32 or float64) and the difference only for the few
    pairs near the middle (at most ``most`` of them).

    Why: the Gram form costs one matrix product for all pairs, the difference form a pass over
    n values per pair. Each Gram-form value is within δ of the difference-form one
    (`_gram_error`, on values ≤ 2·max‖y‖²), so the middle values lie within δ of the
    Gram-form ones and a pair more than 2δ outside them is counted without its
    difference-form value. Ranks are checked at each stage; None when a check fails (the
    caller's next route then decides)."""
    p, n = Y.shape
    lo, hi = _middle_ranks(p * (p - 1) // 2)
    d = D.reshape(-1)  # `upper_sq`: +inf on and below the diagonal
    c = _gram_error(n, D)
    delta = 2 * c * float(sq.max())
    found = _window(d, lo, hi, delta, p)
    if found is None:
        return None
    pos, below, a_eff, b_eff = found
    # ~2.5 % of the pairs, compared in float64 from here: one selection, not a sort
    vals = d[pos].to(torch.float64)
    t_lo, t_hi = _kth(vals, lo - below, hi - below)
    if not (a_eff <= t_lo - 2 * delta and t_hi + 2 * delta <= b_eff):
        return None  # the pairs below (above) the window must lie 2δ below (above) these
    near = (vals >= t_lo - 2 * delta) & (vals <= t_hi + 2 * delta)
    below += int(torch.count_nonzero(vals < t_lo - 2 * delta))
    if not (below <= lo and hi - below < int(torch.count_nonzero(near))):
        return None
    mid = _middle_near(Y, sq, c, pos[near], vals[near], lo - below, hi - below, most)
    if mid is None or not (t_lo - delta <= mid[0] and mid[1] <= t_hi + delta):
        return None  # the pairs counted outside the window must lie beyond these
    return mid


def _middle_near(
    Y: torch.Tensor,
    sq: torch.Tensor,
    c: float,
    pos: torch.Tensor,
    dg: torch.Tensor,
    lo: int,
    hi: int,
    most: int | None = None,
) -> tuple[float, float] | None:
    """The difference-form values ‖y_i − y_j‖² (exact zeros for equal rows, as scipy's pdist)
    of ranks lo and hi among the pairs ``pos`` (flat indices i·p + j), whose Gram-form values
    are ``dg``; None when a check fails or more than ``most`` pairs need their difference.

    Why a second stage: the global δ scales with the largest ‖y‖²; per pair the two forms
    differ by at most c·(‖y_i‖² + ‖y_j‖²) (`_gram_error`), several times less than δ on real
    rows, so fewer pairs need their difference (a gather of two rows each). Order statistics
    are monotone: the rank-lo value is at least the rank-lo lower end of the pairs'
    intervals, the rank-hi value at most the rank-hi upper end; pairs entirely outside those
    two are counted, the rest computed, and the result checked against both ends."""
    p, n = Y.shape
    i, j = pos // p, pos % p
    dp = c * (sq[i] + sq[j])
    low, high = dg - dp, dg + dp
    a, b = _kth(low, lo, lo)[0], _kth(high, hi, hi)[0]
    need = (high >= a) & (low <= b)
    below = int(torch.count_nonzero(high < a))
    i, j = i[need], j[need]
    if most is not None and len(i) > most:
        return None
    step = max(1, _DIFF_BYTES // (8 * max(1, n)))
    parts = []
    for s in range(0, len(i), step):  # in chunks: the rows of every pair at once can be GBs
        diff = Y.index_select(0, i[s : s + step]) - Y.index_select(0, j[s : s + step])
        parts.append((diff * diff).sum(1))
    d64 = torch.cat(parts).sort().values if parts else Y.new_zeros(0)
    if not (below <= lo and hi - below < len(d64)):
        return None
    v_lo, v_hi = float(d64[lo - below]), float(d64[hi - below])
    if not (a <= v_lo and v_hi <= b):
        return None
    return v_lo, v_hi
