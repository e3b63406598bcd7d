"""Vendi-score pruning (docs/methods.md, "Vendi"): keep r rows chosen by the exact greedy Vendi
selection, rebuild W by least squares.

Definition. Rows are items; k(x, y) = exp(−‖x − y‖²/(2σ²)) with σ = ``bandwidth`` (σ = 1 is the
fork's exp(−‖x − y‖²/2); ``"median"``: σ = the median pairwise distance, see `median_bandwidth`).
VS_q(S) from the eigenvalues of K_S/|S|; with ``use_quality`` qVS = mean exp(−‖w‖²) · VS. Greedy:
add the candidate with the best score (``min_diversity``: the worst); ties go to the lowest row.

How it is fast and still exact (q = 1). Per step, with S the chosen rows and K_S = Q diag(κ) Qᵀ
(one eigh of a k × k matrix), a candidate c borders K_S with b = K[S, c]. Its score only needs
ΔT(c) = tr f(K_{S∪c}) − tr f(K_S), f(x) = x log x, and that is a one-dimensional integral

    ΔT(c) = ∫_0^∞ g_c(u) du,   g_c(u) = −log(1 − ψ_c(u)/(1 + u)),   ψ_c(u) = Σ_i z_i²/(κ_i + u),

z = Qᵀb (log det of the bordered K + uI by the Schur complement, and log x = ∫ 1/(1+u) −
1/(x+u) du). g_c is completely monotone, hence a mixture of decaying exponentials (Bernstein)
with a positive fourth derivative: on a grid the 2-point Gauss rule bounds ΔT from below and
Simpson's rule from above, for every candidate at once with one matrix product
(Z∘Z) @ [1/(κ_i + u_j)]. Candidates whose bounds show they cannot win (or tie) are dropped;
the few left are refined on a finer grid and then scored exactly: the eigenvalues of the bordered
matrix (an arrow matrix in Q's basis) by a batched LAPACK/cuSOLVER eigensolve. So the selection is
the exact greedy's; only kernel columns K[:, S] are ever built (m × r, never m × m).

Ties. A candidate is dropped only when its certified upper bound is below another's lower
bound (it is certainly worse). Among the rest, two candidates tie when their exactly computed
objectives differ by less than the sum of their rounding-error bounds, derived per candidate from
the magnitude of K_{S∪c} − I, the conditioning of K_{S∪c} (the log of its smallest eigenvalue
enters f'), the kernel entries' own error and the quality term's error (see `_errors`). Among
tied candidates the lowest row index wins.

Lazy bounds (q = 1, most diverse). ψ_c(u) and hence ΔT(c) never decrease as S grows, so a lower
bound certified at an earlier step still holds: a step bounds afresh only the rows whose remembered
bounds may beat the best certified objective (`_lazy_rows`), and every free row when they cannot
rule the others out. A step left with one candidate has no tie to settle and stores no score; the
chosen prefixes' scores come from the spectra of K_S that the next step's eigh computes, in one
batch when `scores` is read.

Other q: q = 2 is closed-form (T = ‖K − I‖_F²); other orders score every candidate by the exact
eigensolve (correct, not accelerated).

Prefix reuse. The first r rows of the greedy do not depend on the final r: selections are cached
by the matrix's content and the options, a smaller ρ takes a prefix and a larger ρ resumes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from ..core.errors import LaserkitError
from ..spectral.mp import threads
from .median_distance import median_distance
from .median_distance import median_sq_distance as median_sq_distance  # public since 0.2
from .rank_reduction import kept_rank

EPS = float(torch.finfo(torch.float64).eps)
EIG_ZERO = 1e-12  # q < 1 only: eigenvalues ν below this count as 0 (0^q = 0 instead of noise)
NEAR_IDENTITY = 1e-3  # median off-diagonal kernel value below which the kernel says ~nothing
_GRID_RATIOS = (2.0, 1.25)  # coarse grid for all candidates, fine grid for the survivors
AHEAD = 7  # q = 1: kernel columns computed ahead, with the pick's, for likely next picks
LAZY_ROWS = 64  # q = 1: rows bounded afresh per step when remembered bounds rule out the rest
_REFINE_ABOVE = 1  # more survivors than this: the fine grid first (cheaper than exact scores)
_CHUNK_BYTES = 64 << 20
_CACHE_ENTRIES = 64
NUMPY_STEPS = True  # on the CPU, a step's small operations (a few dozen rows) run in numpy
NUMPY_ROWS = 256  # up to this many rows; more (a step bounding every row) stay in torch
SMALL_ROWS_X_COLS = 1 << 22  # up to this many entries the greedy's steps run on one CPU thread
_log = logging.getLogger("laserkit")
_warned: set[float] = set()  # bandwidths already warned about (one line per σ and process)
_cache: OrderedDict[tuple, tuple[list[int], list[float]]] = OrderedDict()


# ---------------------------------------------------------------------------------- scores


def _excess(eps: torch.Tensor, q: float) -> torch.Tensor:
    """(1+ε)^q − 1 − qε, or (1+ε) log1p(ε) − ε for q = 1, to full relative precision: the
    direct formula where |ε| ≥ 1e-2, its Taylor series (cut where the terms fall below eps·ε²)
    where |ε| is smaller and the formula would cancel."""
    safe = eps.clamp_min(-1.0)
    if q == 1.0:
        direct = (1 + safe) * torch.log1p(safe.clamp_min(-1 + 1e-300)) - safe
        direct = torch.where(safe <= -1, torch.ones_like(eps), direct)
    else:
        direct = torch.pow(1 + safe, q) - 1 - q * safe
    a = eps.abs()
    small = a < 1e-2
    top = float(torch.where(small, a, torch.zeros_like(a)).max()) if eps.numel() else 0.0
    if top == 0.0 and not bool(small.any()):
        return direct
    terms = 10 if top == 0.0 else min(10, max(1, math.ceil(-53 * math.log(2) / math.log(top))))
    coeffs, c = [], q * (q - 1) / 2
    for n in range(2, 2 + terms):
        coeffs.append((-1.0) ** n / (n * (n - 1)) if q == 1.0 else c)
        c *= (q - n) / (n + 1)
    poly = torch.full_like(eps, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        poly = poly * eps + c
    return torch.where(small, eps * eps * poly, direct)


def _relative(eps: torch.Tensor, q: float) -> torch.Tensor:
    """log VS_q − log N of sets from the eigenvalues ε of K − I (last dim: one set's N)."""
    eps = eps.to(torch.float64)
    n = eps.shape[-1]
    if q < 1.0:
        eps = torch.where((1 + eps) / n <= EIG_ZERO, torch.full_like(eps, -1.0), eps)
    eps = eps.clamp_min(-1.0)
    if math.isinf(q):
        return -torch.log1p(eps.max(-1).values)
    if q == 0.0:
        return torch.log((eps > -1).sum(-1).to(torch.float64)) - math.log(n)
    t = _excess(eps, q).sum(-1)
    if q == 1.0:
        return -t / n
    return torch.log1p(t / n) / (1 - q)


def _t_of(rel: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """T = Σ excess back from a relative score (q ∉ {0, ∞})."""
    return -rel * n if q == 1.0 else torch.expm1(rel * (1 - q)) * n


def log_vendi(eps: torch.Tensor, q: float = 1.0) -> torch.Tensor:
    """log VS_q of sets from the eigenvalues ε of K − I: exactly the definition's
    −Σ ν log ν (q = 1) or log Σ ν^q/(1 − q), ν = (1 + ε)/N, written without the cancellation that
    loses the differences between candidates when K is close to I."""
    return math.log(eps.shape[-1]) + _relative(eps, q)


def _arrow_eigenvalues(lam: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the arrow matrices [[diag lam, z_c], [z_cᵀ, 0]] for every row z_c of z
    (lam: (k,), z: (C, k) → (C, k+1)), by one batched symmetric eigensolve."""
    C, k = z.shape
    A = torch.zeros(C, k + 1, k + 1, dtype=lam.dtype, device=lam.device)
    A[:, :k, :k] = torch.diag(lam)
    A[:, :k, k] = z
    A[:, k, :k] = z
    return torch.linalg.eigvalsh(A)


# --------------------------------------------------------------------------------- bandwidth


def median_bandwidth(W: torch.Tensor) -> float:
    """σ = the median pairwise distance between rows (the usual RBF heuristic), so the kernel of
    a median pair is exp(−1/2). Rows: all pairs for m ≤ MEDIAN_ROWS, else a seeded sample."""
    d = median_distance(W)
    if not d > 0:
        raise LaserkitError(
            "--bandwidth median: the rows are all equal (median distance 0); give a number"
        )
    return d


def check_bandwidth(bandwidth: float | str) -> float | str:
    """A positive number or 'median'; anything else is refused with what is accepted."""
    if isinstance(bandwidth, str):
        if bandwidth.strip().lower() == "median":
            return "median"
        try:
            bandwidth = float(bandwidth)
        except ValueError:
            raise LaserkitError(
                f"bandwidth {bandwidth!r}: give a number > 0 (1 is the fork's kernel) or 'median'"
            ) from None
    if not (math.isfinite(bandwidth) and bandwidth > 0):
        raise LaserkitError(f"bandwidth {bandwidth} must be a finite number > 0 or 'median'")
    return float(bandwidth)


def resolve_bandwidth(W: torch.Tensor, bandwidth: float | str) -> float:
    """The σ used for W."""
    bw = check_bandwidth(bandwidth)
    return median_bandwidth(W) if bw == "median" else float(bw)


def _warn_if_identity(col: torch.Tensor, c: int, sigma: float) -> None:
    """One warning line when the kernel is numerically near the identity, judged from the first
    kernel column the greedy computes (the median of K[i, c] over the other rows i)."""
    others = torch.cat([col[:c], col[c + 1 :]])
    if not len(others):
        return
    typical = float(others.median())
    if typical < NEAR_IDENTITY:
        msg = (
            f"laserkit: warning: the Vendi kernel is nearly the identity at bandwidth "
            f"{sigma:g} (median off-diagonal entry {typical:.1e}): the selection then says "
            f"little about diversity; try --bandwidth median"
        )
        if sigma not in _warned:
            _warned.add(sigma)
            _log.warning(msg)


# ------------------------------------------------------------------------------- the greedy


class _Kernel:
    """Kernel columns K[:, c] on demand, float64 on W's device, and their error bound."""

    def __init__(self, W: torch.Tensor, sigma: float) -> None:
        self.X = W.detach().to(torch.float64)
        self.sq = (self.X * self.X).sum(1)
        self.gamma = 1.0 / (2.0 * sigma * sigma)
        m, n = self.X.shape
        top = float(self.sq.max()) if m else 0.0
        # relative error of one entry: d² = s_i + s_j − 2 x_i·x_j loses ≤ eps(√n+2)·4·max s, the
        # exponent multiplies it by γ, exp adds 2 eps
        self.entry_err = EPS * (2 + 4 * self.gamma * top * (math.sqrt(n) + 2))
        self.sq_err = EPS * (math.sqrt(n) + 2) * top  # absolute error of a ‖w‖²

    def columns(self, cols: list[int]) -> torch.Tensor:
        """K[:, cols] (m × len(cols), float64): the Gram form of the squared distances from
        one product, which reads W once however many columns it makes; a row's own entry is
        exactly 1."""
        c = torch.tensor(cols, dtype=torch.long)
        if _numpy(self.X):  # the arithmetic in numpy: half torch's per-call cost
            sq, cn = self.sq.numpy(), c.numpy()
            d2 = sq[:, None] + sq[cn][None, :]
            d2 -= 2 * (self.X[c] @ self.X.T).numpy().T  # this order: 2/3 of X @ X[c].T's time
            np.maximum(d2, 0.0, out=d2)
            d2[cn, np.arange(len(cn))] = 0.0
            return torch.from_numpy(np.exp(d2 * -self.gamma, out=d2))
        c = c.to(self.X.device)
        d2 = (self.sq[:, None] + self.sq[c][None, :] - 2 * (self.X @ self.X[c].T)).clamp_min(0)
        d2[c, torch.arange(len(cols), device=c.device)] = 0.0
        return torch.exp(-self.gamma * d2)


GAUSS = 0.5 / math.sqrt(3)  # the 2-point Gauss–Legendre nodes: 1/2 ∓ GAUSS of an interval


class _Rule(NamedTuple):
    """Where g is evaluated and with what weights (`_points`)."""

    pts: np.ndarray  # [0 if usable] m_1, u_1..u_N, m_2..m_N (upper values), then Gauss points
    n: int  # nodes
    nu: int  # how many points take upper values
    off: int  # 1 when u = 0 is among them
    u1: float
    U: float  # u_N: the tail [U, ∞) is integrated in closed form
    w_up: np.ndarray  # Simpson's weights of u_1..u_N, m_2..m_N ([0, u_1] apart)
    w_lo: np.ndarray  # the Gauss rule's weights (h_j/2 each)


def _rule(
    kappa: np.ndarray, dk: float, db: float, k: int, ratio: float
) -> tuple[_Rule, np.ndarray, float]:
    """The points and weights (`_points`) of a geometric grid covering the scales of g (κ and
    1 + u): from u_1 ≈ min(κ_lo, 1)/64 (at least 64·δκ) to u_N ≈ 1024(1 + κ_max), both
    rounded up to powers of 2 so that the steps of a selection share a few grids; and per
    point the factor taking ψ to x = ψ/(1+u) with ψ's relative error 2·δκ/(κ_lo + u) + 2·δb
    + 8(k+1)·eps on the safe side (up where Simpson's rule takes x, down at the Gauss
    points); and κ_lo = κ_min − δκ."""
    klo = max(float(kappa.min()) - dk, 0.0)
    u1 = max(min(klo, 1.0) / 64, 64 * dk + 1e-300)
    uN = 1024 * (1 + float(kappa.max()))
    rule = _points(math.ceil(math.log2(u1)), math.ceil(math.log2(uN)), ratio, klo > 0)
    pts, nu = rule.pts, rule.nu
    rel = 2 * dk / (klo + pts) + 2 * db + 8 * (k + 1) * EPS
    scale = np.concatenate(((1 + rel[:nu]) / (1 + pts[:nu]), (1 - rel[nu:]) / (1 + pts[nu:])))
    return rule, scale, klo


@functools.lru_cache(maxsize=256)
def _points(e1: int, eN: int, ratio: float, zero: bool) -> _Rule:
    """Nodes u_j = 2^e1 … 2^eN, geometric with a ratio of at most ``ratio``; Simpson's rule
    on each interval [u_{j−1}, u_j] (u_0 = 0, midpoint m_j) takes the upper values of g at
    the nodes and midpoints, the 2-point Gauss rule the lower ones at its points. ``zero``:
    u = 0 is usable (κ_lo > 0), for Simpson on [0, u_1]. Read-only arrays: they are shared."""
    count = max(2, math.ceil((eN - e1) * math.log(2) / math.log(ratio)) + 1)
    nodes = 2.0 ** (e1 + (eN - e1) * np.arange(count) / (count - 1))
    n, off = len(nodes), int(zero)
    prev = np.concatenate(([0.0], nodes[:-1]))
    h = nodes - prev
    nu = off + 2 * n
    pts = np.zeros(nu + 2 * n)
    pts[off] = h[0] / 2
    pts[off + 1 : off + 1 + n] = nodes
    pts[off + 1 + n : nu] = prev[1:] + h[1:] / 2
    pts[nu : nu + n] = prev + h * (0.5 - GAUSS)
    pts[nu + n :] = prev + h * (0.5 + GAUSS)
    w_up = np.zeros(2 * n - 1)  # [u_{j-1}, u_j], j ≥ 2: h_j/6 to each end, 4h_j/6 to m_j
    w_up[1:n] += h[1:] / 6
    w_up[: n - 1] += h[1:] / 6
    w_up[n:] = 4 * h[1:] / 6
    w_lo = np.concatenate((h / 2, h / 2))
    for a in (pts, w_up, w_lo):
        a.flags.writeable = False
    return _Rule(pts, n, nu, off, float(nodes[0]), float(nodes[-1]), w_up, w_lo)


def _crude(u1: float) -> float:
    """∫_0^u1 (−log u + log(1 + u)) du ≥ ∫_0^u1 g (ψ ≤ 1, so 1 − ψ/(1+u) ≥ u/(1+u))."""
    return u1 * (1 - math.log(u1)) + (1 + u1) * math.log1p(u1) - u1


def _tail_weights(kappa: torch.Tensor, U: float) -> torch.Tensor:
    """h_i = ∫_U^∞ du/((κ_i + u)(1 + u)) = log1p(d/(U+1))/d, d = κ_i − 1."""
    d = kappa - 1
    a = U + 1
    near = d.abs() < 1e-8 * a
    safe = torch.where(near, torch.ones_like(d), d)
    return torch.where(near, (1 - d / (2 * a)) / a, torch.log1p(safe / a) / safe)


def _t_bounds(
    kappa: torch.Tensor, Z2: torch.Tensor, dk: float, db: float, k: int, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_t_bounds_torch`, or on the CPU for up to NUMPY_ROWS rows the same formulas in numpy
    (`_t_bounds_np`); on more rows the work is the arrays, not per-call overhead, and torch's
    operations use the threads a large selection keeps."""
    if Z2.device.type == "cpu" and Z2.shape[0] <= NUMPY_ROWS:
        with np.errstate(all="ignore"):
            lb, ub = _t_bounds_np(kappa.numpy(), Z2.numpy(), dk, db, k, ratio)
        return torch.from_numpy(lb), torch.from_numpy(ub)
    return _t_bounds_torch(kappa, Z2, dk, db, k, ratio)


def _t_bounds_torch(
    kappa: torch.Tensor, Z2: torch.Tensor, dk: float, db: float, k: int, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified lower and upper bounds of ΔT(c) = ∫ g_c for every row of Z2 = (Qᵀb_c)².

    The rule (docs/methods.md, "Vendi"): g_c is completely monotone, so by Bernstein's theorem
    a mixture of decaying exponentials, each with a positive fourth derivative; on every
    interval the 2-point Gauss–Legendre rule is then a lower bound of the integral and
    Simpson's rule an upper one (their error terms are −h⁵g⁗/4320 and +h⁵g⁗/2880). Both are
    fourth order: on a grid of ratio 1.25 they bound ΔT ~3× tighter than the midpoint and
    trapezoid rules (second order) on one of ratio 1.02, at a fifth of the points.
    [0, u_1] takes Simpson's value when u = 0 is usable, or `_crude`; [U, ∞) a tail
    integral of ψ/(1+u) (times 1/(1 − x(U)) above).

    dk bounds the error of the κ (backward error of the eigendecomposition plus the kernel
    entries' error), db the relative error of the entries of b: ψ(u) is then known to a relative
    2·dk/(κ_min − dk + u) + 2·db + O(k·eps)."""
    dev = Z2.device
    rule, scale_np, klo = _rule(kappa.cpu().numpy(), dk, db, k, ratio)
    pts, w_up, w_lo, scale = (
        torch.tensor(a, device=dev) for a in (rule.pts, rule.w_up, rule.w_lo, scale_np)
    )
    n, nu, off = rule.n, rule.nu, rule.off
    # κ_i ≥ κ_min > klo when u = 0 is used; otherwise every point is ≥ u_1·(1/2 − GAUSS) > 8 δκ
    Rinv = 1.0 / (kappa.clamp_min(0)[:, None] + pts[None, :])
    M = torch.cat([Rinv, _tail_weights(kappa, rule.U)[:, None]], 1)
    P = Z2 @ M  # ψ at every point, and the tail integral of ψ/(1+u)
    # x rounded up where Simpson's rule takes it, down at the Gauss points; x ≥ 1 gives g = ∞
    x = (P[:, :-1] * scale).clamp(max=1.0)
    g = -torch.log1p(-x)
    lb = (g[:, nu:] * w_lo).sum(1)
    ub = (g[:, off + 1 : nu] * w_up).sum(1)
    crude = _crude(rule.u1)
    if off:  # Simpson on [0, u_1]: g(0), g(m_1), g(u_1)
        first = (g[:, 0] + 4 * g[:, 1] + g[:, 2]) * (rule.u1 / 6)
        ub = ub + torch.minimum(first, torch.full_like(first, crude))
    else:
        ub = ub + crude
    tail, x_u = P[:, -1], x[:, off + n]  # x_u: at u_N = U
    r_tail = 2 * dk / (klo + rule.U) + 2 * db + 8 * (k + 1) * EPS
    lb = lb + tail * (1 - r_tail)
    ub = ub + torch.where(x_u < 1, tail * (1 + r_tail) / (1 - x_u), torch.full_like(tail, math.inf))
    slack = 4 * (5 * n + k) * EPS  # rounding of the sums and of the points
    return lb * (1 - slack), ub * (1 + slack)


def _t_bounds_cheap(
    kappa: torch.Tensor, Z2: torch.Tensor, dk: float, db: float, k: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`_t_bounds_cheap_torch`, or on the CPU for up to NUMPY_ROWS rows the same in numpy."""
    if Z2.device.type == "cpu" and Z2.shape[0] <= NUMPY_ROWS:
        with np.errstate(all="ignore"):
            got = _t_bounds_cheap_np(kappa.numpy(), Z2.numpy(), dk, db, k)
        return None if got is None else (torch.from_numpy(got[0]), torch.from_numpy(got[1]))
    return _t_bounds_cheap_torch(kappa, Z2, dk, db, k)


def _t_bounds_cheap_torch(
    kappa: torch.Tensor, Z2: torch.Tensor, dk: float, db: float, k: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Cheaper, looser bounds from two numbers per candidate (None when K_S is too close to
    singular for them): x(u) = ψ(u)/(1+u) ≤ p = ψ(0), so x ≤ −log(1 − x) ≤ x·(−log(1 − p)/p),
    and ∫ x du = Σ z_i² log(κ_i)/(κ_i − 1)."""
    klo = float(kappa.min()) - dk
    if klo <= 0:
        return None
    P = Z2 @ torch.stack([_tail_weights(kappa, 0.0), 1.0 / kappa], 1)
    ix, p = P[:, 0], P[:, 1]
    rel = 2 * dk / klo + 2 * db + 8 * (k + 1) * EPS
    p_hi = p * (1 + rel)
    factor = torch.where(
        p_hi < 1,
        -torch.log1p(-p_hi.clamp(max=1 - 1e-300)) / p_hi.clamp_min(1e-300),
        torch.full_like(p, math.inf),
    )
    factor = torch.where(p_hi > 1e-300, factor, torch.ones_like(p))
    slack = 8 * (k + 4) * EPS
    return ix * ((1 - rel) * (1 - slack)), ix * factor * ((1 + rel) * (1 + slack))


# The same bounds in numpy, for the CPU. Why: a greedy step bounds a few dozen rows on a grid of
# ~70-140 points, ~120 small array operations whose cost is per-call overhead; numpy's is about
# half of torch's dispatcher's (docs/methods.md, "Vendi"). The products run through torch (one
# thread under `threads`, where numpy's BLAS could spin up its own). Operation for operation
# these are the torch functions above, so the same error analysis holds.


def _numpy(t: torch.Tensor) -> bool:
    """Whether a step's small operations on t run in numpy (CPU tensors, NUMPY_STEPS)."""
    return NUMPY_STEPS and t.device.type == "cpu"


def _mm_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(b)).numpy()


def _tail_weights_np(kappa: np.ndarray, U: float) -> np.ndarray:
    """`_tail_weights` in numpy."""
    d = kappa - 1
    a = U + 1
    near = np.abs(d) < 1e-8 * a
    safe = np.where(near, 1.0, d)
    return np.where(near, (1 - d / (2 * a)) / a, np.log1p(safe / a) / safe)


def _t_bounds_np(
    kappa: np.ndarray, Z2: np.ndarray, dk: float, db: float, k: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """`_t_bounds_torch` in numpy."""
    rule, scale, klo = _rule(kappa, dk, db, k, ratio)
    n, nu, off = rule.n, rule.nu, rule.off
    M = np.empty((len(kappa), len(rule.pts) + 1))
    np.divide(1.0, np.maximum(kappa, 0.0)[:, None] + rule.pts[None, :], out=M[:, :-1])
    M[:, -1] = _tail_weights_np(kappa, rule.U)
    P = _mm_np(Z2, M)
    x = np.minimum(P[:, :-1] * scale, 1.0)
    g = -np.log1p(-x)
    lb = (g[:, nu:] * rule.w_lo).sum(1)
    ub = (g[:, off + 1 : nu] * rule.w_up).sum(1)
    crude = _crude(rule.u1)
    if off:
        ub = ub + np.minimum((g[:, 0] + 4 * g[:, 1] + g[:, 2]) * (rule.u1 / 6), crude)
    else:
        ub = ub + crude
    tail, x_u = P[:, -1], x[:, off + n]
    r_tail = 2 * dk / (klo + rule.U) + 2 * db + 8 * (k + 1) * EPS
    lb = lb + tail * (1 - r_tail)
    ub = ub + np.where(x_u < 1, tail * (1 + r_tail) / (1 - x_u), math.inf)
    slack = 4 * (5 * n + k) * EPS
    return lb * (1 - slack), ub * (1 + slack)


def _t_bounds_cheap_np(
    kappa: np.ndarray, Z2: np.ndarray, dk: float, db: float, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """`_t_bounds_cheap_torch` in numpy."""
    klo = float(kappa.min()) - dk
    if klo <= 0:
        return None
    P = _mm_np(Z2, np.stack([_tail_weights_np(kappa, 0.0), 1.0 / kappa], 1))
    ix, p = P[:, 0], P[:, 1]
    rel = 2 * dk / klo + 2 * db + 8 * (k + 1) * EPS
    p_hi = p * (1 + rel)
    factor = np.where(
        p_hi < 1,
        -np.log1p(-np.minimum(p_hi, 1 - 1e-300)) / np.maximum(p_hi, 1e-300),
        math.inf,
    )
    factor = np.where(p_hi > 1e-300, factor, 1.0)
    slack = 8 * (k + 4) * EPS
    return ix * ((1 - rel) * (1 - slack)), ix * factor * ((1 + rel) * (1 + slack))


def _exact(lam: torch.Tensor, Z: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative log-scores (log VS − log N) of each candidate from its bordered spectrum, and the
    eigenvalues (C, k+1), chunked to bound memory."""
    n = lam.shape[0] + 1
    step = max(1, _CHUNK_BYTES // (8 * n * n))
    eps = torch.cat([_arrow_eigenvalues(lam, zc) for zc in Z.split(step)])
    return _relative(eps, q), eps


def _errors(eps: torch.Tensor, rel: torch.Tensor, deps: torch.Tensor, q: float) -> torch.Tensor:
    """Bound of the error of each candidate's relative log-score.

    deps (per candidate) bounds every eigenvalue's error: backward-stable eigensolves and the
    basis change give ≤ 4(k+1)·eps·‖E‖_F, the kernel entries' own error ≤ entry_err·‖E‖_F (E =
    K_{S∪c} − I). It moves T = Σ excess(ε_j) by ≤ Σ |excess'(ε_j)|·δ + δ²/(2(1+ε_j)), where
    excess' = log(1+ε) (q = 1) grows with the conditioning: κ_j = 1 + ε_j is floored at δ."""
    n = eps.shape[-1]
    d = deps[:, None]
    kap = (1 + eps).clamp_min(0).maximum(d)
    if math.isinf(q):
        return deps / kap.max(1).values
    if q == 0.0:
        return torch.zeros_like(rel)
    if q == 1.0:
        slope = kap.log().abs()
    else:
        slope = q * (kap ** (q - 1) - 1).abs()
    curv = torch.minimum(d / kap, torch.ones_like(kap)) / 2
    err_t = (d * (slope + curv)).sum(1)
    t = _t_of(rel, n, q)  # every excess term has the sign of q(q − 1) (or ≥ 0 for q = 1)
    err_t = err_t + 8 * n * EPS * t.abs()
    if q == 1.0:
        return err_t / n
    return err_t / (n * (1 + t / n).clamp_min(1e-300) * abs(1 - q)) + 4 * EPS * rel.abs()


def _pick(obj: torch.Tensor, err: torch.Tensor, index: torch.Tensor) -> tuple[int, float]:
    """Position of the lowest row index among candidates tied with the best (within the sum of
    their error bounds), and the widest window that was used."""
    b = int(torch.argmax(obj))
    tied = obj >= obj[b] - (err + err[b])
    return int(torch.nonzero(tied)[torch.argmin(index[tied])][0]), float(err.max() + err[b])


class _Greedy:
    """The greedy's state: chosen rows, their kernel columns, and what a step needs."""

    def __init__(
        self,
        W: torch.Tensor,
        sigma: float,
        use_quality: bool,
        min_diversity: bool,
        q: float,
    ) -> None:
        self.kern = _Kernel(W, sigma)
        self.sigma = sigma
        self.m = W.shape[0]
        self.use_quality, self.sign, self.q = use_quality, -1.0 if min_diversity else 1.0, q
        self.log_s = -self.kern.sq  # log quality s(w) = exp(−‖w‖²)
        self.free = torch.ones(self.m, dtype=torch.bool, device=self.kern.X.device)
        self._zeros = torch.zeros(self.m, dtype=torch.float64, device=self.kern.X.device)
        self.B = torch.empty(self.m, 0, dtype=torch.float64, device=self.kern.X.device)
        self._ahead: dict[int, torch.Tensor] = {}  # columns of likely next picks (`_next_picks`)
        self.chosen: list[int] = []
        self._scores: list[float | None] = []  # None: left for `scores` (q = 1 steps)
        self._spectra: dict[int, torch.Tensor] = {}  # step → eigenvalues of its K_S − I
        self.lb: torch.Tensor | None = None  # per row: a certified lower bound of ΔT (q = 1)
        self.windows: list[float] = []  # per step: the widest tie window used (for the tests)

    @property
    def scores(self) -> list[float]:
        """Per step, log VS (log qVS) of the chosen prefix; the open ones filled in one batch."""
        if any(s is None for s in self._scores):
            self._fill_scores()
        return self._scores  # type: ignore[return-value]

    def _fill_scores(self) -> None:
        """Scores of the prefixes that q = 1 steps left open, from their spectra in one batch.

        Why: a step whose bounds leave one candidate needs no exact score to decide, and the
        eigenvalues of each prefix's K_S − I come free with the next step's eigh; scoring them
        one step at a time was a third of the small operations of a selection."""
        open_ = [i for i, v in enumerate(self._scores) if v is None]
        last = len(self.chosen) - 1
        if last in open_ and last not in self._spectra:
            self._spectra[last] = torch.linalg.eigvalsh(self._gram(len(self.chosen)))
        eps = torch.nn.utils.rnn.pad_sequence(
            [self._spectra.pop(i) for i in open_], batch_first=True
        ).clamp_min(-1.0)
        dev = self.log_s.device
        size = torch.tensor(open_, dtype=torch.float64, device=dev) + 1
        rel = -_excess(eps, 1.0).sum(-1) / size  # padded zeros add excess(0) = 0
        if self.use_quality:
            lq = torch.logcumsumexp(self.log_s[self.chosen], 0)[open_]
        else:
            lq = torch.log(size)
        for i, v in zip(open_, (rel + lq).tolist(), strict=True):
            self._scores[i] = v

    def _gram(self, k: int) -> torch.Tensor:
        """E = K_S − I of the first k chosen rows, exactly symmetric."""
        if _numpy(self.B):  # numpy's indexing: a fifth of torch's per-call cost
            A = self.B.numpy()[self.chosen[:k], :k]
            A = (A + A.T) / 2
            np.fill_diagonal(A, 0.0)
            return torch.from_numpy(A)
        E = self.B[self.chosen[:k], :k]
        E = (E + E.T) / 2
        return E.fill_diagonal_(0)

    def add(self, c: int, log_score: float | None) -> None:
        self.chosen.append(c)
        self._scores.append(log_score)
        self.free[c] = False
        k = len(self.chosen) - 1
        if k >= self.B.shape[1]:  # grow K[:, S] by doubling: no copy per step
            grown = self.B.new_empty(self.m, max(8, 2 * self.B.shape[1]))
            grown[:, :k] = self.B[:, :k]
            self.B = grown
        col = self._ahead.pop(c, None)
        if col is None:
            guess = self._next_picks(c)
            cols = self.kern.columns([c, *guess])
            col = cols[:, 0]
            self._ahead = {g: cols[:, i + 1] for i, g in enumerate(guess)}
        self.B[:, k] = col
        if k == 0:
            _warn_if_identity(self.B[:, 0], c, self.sigma)

    def _next_picks(self, c: int) -> list[int]:
        """The AHEAD free rows other than c most likely to be picked next: those whose
        remembered bounds allow the best objective after c joins (`_lazy_rows`' order).

        Why: a kernel column is a product with all of W, whose cost on the CPU is mostly
        reading W (7 MB in float64 on the default model, out of cache by the next pick), so
        one product makes eight columns for little more than one costs. On the default
        model's last gate_proj at r = 57 the next pick was the first of this order at 49 of 55
        steps (bandwidth 2) and 43 of 55 (`median`), among the first eight at all but one: 9
        products instead of 57. Columns are exact whichever product made them."""
        if self.lb is None or self.sign < 0 or AHEAD < 1:
            return []
        lq, lq_err = self._quality(None)
        stale = self._stale(lq + lq_err, len(self.chosen) + 1)
        stale[c] = -math.inf
        if isinstance(stale, torch.Tensor):
            top_t = torch.topk(stale, min(AHEAD, self.m))
            return top_t.indices[top_t.values > -math.inf].tolist()
        top = np.arange(len(stale))
        if len(stale) > AHEAD:
            top = np.argpartition(stale, len(stale) - AHEAD)[-AHEAD:]
        return [int(i) for i in top if stale[i] > -math.inf]

    def _quality(self, cand: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        """log mean quality of S ∪ {c} minus log N (N is common) for the rows ``cand`` (None:
        all), and its error bound."""
        if not self.use_quality:
            return (self._zeros if cand is None else self._zeros[: len(cand)]), 0.0
        ls = self.log_s if cand is None else self.log_s[cand]
        lq = (
            ls
            if not self.chosen
            else torch.logaddexp(torch.logsumexp(self.log_s[self.chosen], 0), ls)
        )
        return lq, 4 * EPS * float(lq.abs().max()) + self.kern.sq_err

    def step(self) -> None:
        k = len(self.chosen)
        n = k + 1
        if k > 0 and self.q == 1.0:
            self._step_q1(k)
            return
        cand = self.free.nonzero()[:, 0]
        lq, lq_err = self._quality(cand)
        if k == 0:  # every single row has VS = 1
            obj = self.sign * lq
            err = torch.full_like(obj, lq_err)
            j, w = _pick(obj, err, cand)
            self.windows.append(w)
            self.add(int(cand[j]), float(lq[j]))
            return
        B = self.B[:, :k]  # K[:, S]
        E = B[self.chosen]
        E = (E + E.T) / 2
        E.fill_diagonal_(0)
        lam, Q = torch.linalg.eigh(E)
        Bc = B[cand]
        b2 = (Bc * Bc).sum(1)
        e_fro = torch.sqrt((E * E).sum() + 2 * b2)
        deps = (4 * n * EPS + self.kern.entry_err) * e_fro
        if self.q == 2.0:  # T = ‖E_c‖_F², the relative score −log1p(T/n)
            t = (E * E).sum() + 2 * b2
            rel = -torch.log1p(t / n)
            err = (2 * (self.kern.entry_err + 4 * EPS) * t) / (n + t) + 4 * EPS * rel.abs()
            obj = self.sign * (rel + lq)
            j, w = _pick(obj, err + lq_err, cand)
            self.windows.append(w)
            self.add(int(cand[j]), float(rel[j] + lq[j]) + math.log(n) * (1 - self.use_quality))
            return
        Z = Bc @ Q
        rel, eps = _exact(lam, Z, self.q)
        err = _errors(eps, rel, deps, self.q) + lq_err
        obj = self.sign * (rel + lq)
        j, w = _pick(obj, err, cand)
        self.windows.append(w)
        self.add(int(cand[j]), float(rel[j] + lq[j]) + math.log(n) * (1 - self.use_quality))

    def _step_q1(self, k: int) -> None:
        """One step for q = 1: bounds for the rows that may win (all free rows, or the lazy
        guess `_lazy_rows` when it proves the others worse), the few left scored exactly."""
        n = k + 1
        E = self._gram(k)
        lam, Q = torch.linalg.eigh(E)
        if self._scores[k - 1] is None:
            self._spectra[k - 1] = lam
        ee = float(np.square(E.numpy()).sum()) if _numpy(E) else float((E * E).sum())
        coef = 4 * n * EPS + self.kern.entry_err
        kappa = 1 + lam
        lq, lq_err = self._quality(None)
        rows, rest_hi = self._lazy_rows(lq + lq_err, n)
        found = self._narrow(Q, kappa, coef * math.sqrt(ee), rows, lq, lq_err, rest_hi)
        if found is None:  # a row outside the guess may still win: bound every free row
            found = self._narrow(
                Q, kappa, coef * math.sqrt(ee), self.free.nonzero()[:, 0], lq, lq_err, -math.inf
            )
        # the grid bounds always exist (finite weights: check_finite), so a finite best
        # objective exceeds rest_hi = −∞
        assert found is not None
        pos, Z, Z2, lqp = found
        if len(pos) == 1:  # certainly better than every other row: no tie, no exact score
            self.windows.append(0.0)
            self.add(int(pos[0]), None)
            return
        rel, eps = _exact(lam, Z, 1.0)
        deps = coef * torch.sqrt(ee + 2 * Z2.sum(1))
        err = _errors(eps, rel, deps, 1.0) + lq_err
        obj = self.sign * (rel + lqp)
        j, w = _pick(obj, err, pos)
        self.windows.append(w)
        score = float(rel[j] + lqp[j]) + math.log(n) * (1 - self.use_quality)
        self.add(int(pos[j]), score)

    def _lazy_rows(self, lq_hi: torch.Tensor, n: int) -> tuple[torch.Tensor | None, float]:
        """The LAZY_ROWS free rows whose remembered bounds allow the best objective, and the
        best objective any other row can reach (None, −inf: no guess, bound every row).

        Why this is exact: ψ_c(u) = b_Sᵀ(K_S + uI)⁻¹b_S never decreases when a row joins S
        (the Schur complement of a positive definite K_S + uI), so neither does ΔT(c): a lower
        bound of ΔT(c) certified at an earlier step still holds, and −lb/n + lq + lq_err
        bounds the objective of c from above now (for the most diverse set; the least diverse
        one needs upper bounds of ΔT, which do not stay valid). Only rows that may beat the
        guess's best certified objective need bounds this step: at bandwidth 2 a few dozen of
        the 1536, where bounding all rows cost an m × k × k product per step."""
        if self.lb is None or self.sign < 0:
            return None, -math.inf
        stale = self._stale(lq_hi, n)
        if isinstance(stale, np.ndarray):
            return self._lazy_rows_np(stale)
        top = torch.topk(stale, min(LAZY_ROWS + 1, self.m))
        vals = top.values.tolist()
        rest = vals[LAZY_ROWS] if len(vals) > LAZY_ROWS else -math.inf
        rows = top.indices[:LAZY_ROWS][top.values[:LAZY_ROWS] > -math.inf]
        return rows, rest

    def _stale(self, lq_hi: torch.Tensor, n: int) -> torch.Tensor | np.ndarray:
        """Per row, −lb/n + lq_hi: the best objective its remembered lower bound of ΔT still
        allows with n rows in the set (an upper bound, `_lazy_rows`), −∞ for chosen rows; in
        numpy on the CPU (`_numpy`)."""
        assert self.lb is not None
        if _numpy(self.lb):
            return np.where(self.free.numpy(), -self.lb.numpy() / n + lq_hi.numpy(), -math.inf)
        return torch.where(self.free, -self.lb / n + lq_hi, -math.inf)

    def _lazy_rows_np(self, stale: np.ndarray) -> tuple[torch.Tensor, float]:
        """`_lazy_rows` in numpy (a partition, not a sort)."""
        if len(stale) <= LAZY_ROWS:
            top = np.flatnonzero(stale > -math.inf)
            return torch.from_numpy(top), -math.inf
        part = np.argpartition(stale, len(stale) - LAZY_ROWS - 1)
        rest = float(stale[part[-LAZY_ROWS - 1]])
        top = part[-LAZY_ROWS:]
        return torch.from_numpy(top[stale[top] > -math.inf]), rest

    def _narrow(
        self,
        Q: torch.Tensor,
        kappa: torch.Tensor,
        dk: float,
        rows: torch.Tensor | None,
        lq: torch.Tensor,
        lq_err: float,
        rest_hi: float,
    ) -> tuple[torch.Tensor, ...] | None:
        """Drop the rows of ``rows`` that are certainly worse than another, through the cheap
        bounds and then finer grids; the rows left with their Z = Qᵀb, Z², lq. None when the
        best certified objective (the tightest, after the finer grids) does not exceed
        ``rest_hi`` (the other rows' best bound); the bounds found are remembered either way."""
        if rows is None:
            rows = self.free.nonzero()[:, 0]
        if _numpy(Q) and len(rows) <= NUMPY_ROWS:
            Zn = _mm_np(self.B.numpy()[rows.numpy(), : len(kappa)], Q.numpy())
            return self._narrow_np(torch.from_numpy(Zn), kappa, dk, rows, lq, lq_err, rest_hi)
        Z = self.B[rows, : len(kappa)] @ Q
        Z2, lqp = Z * Z, lq[rows]
        k, best = len(kappa), -math.inf
        for ratio in (0.0, *_GRID_RATIOS):
            bounds = (
                _t_bounds_cheap(kappa, Z2, dk, self.kern.entry_err, k)
                if ratio == 0
                else _t_bounds(kappa, Z2, dk, self.kern.entry_err, k, ratio)
            )
            if bounds is None:
                continue
            lb, ub = bounds
            # objective = sign·(−(T0 + ΔT)/n + lq), T0 common to all and left out; lq is known
            # to ±lq_err. A candidate whose upper bound is below the best lower bound is certainly
            # worse than another: it can be neither the pick nor tied with it
            n = k + 1
            if self.sign > 0:
                o_lo, o_hi = -ub / n + lqp - lq_err, -lb / n + lqp + lq_err
            else:
                o_lo, o_hi = lb / n - lqp - lq_err, ub / n - lqp + lq_err
            best = max(best, float(o_lo.max()))
            self._remember(rows, lb)
            keep = o_hi >= best
            rows, Z, Z2, lqp = rows[keep], Z[keep], Z2[keep], lqp[keep]
            if len(rows) <= _REFINE_ABOVE:
                break
        return (rows, Z, Z2, lqp) if best > rest_hi else None

    def _narrow_np(
        self,
        Zt: torch.Tensor,
        kappa_t: torch.Tensor,
        dk: float,
        rows_t: torch.Tensor,
        lq: torch.Tensor,
        lq_err: float,
        rest_hi: float,
    ) -> tuple[torch.Tensor, ...] | None:
        """`_narrow` on the CPU, its filtering in numpy: the same stages, bounds and tests on
        a few dozen rows, whose cost is the per-call overhead numpy halves."""
        if self.lb is None:
            self.lb = torch.full((self.m,), -math.inf, dtype=torch.float64)
        lb_all = self.lb.numpy()  # shares memory: remembered bounds land in self.lb
        rows, Z, kappa = rows_t.numpy(), Zt.numpy(), kappa_t.numpy()
        Z2, lqp = Z * Z, lq.numpy()[rows]
        k, best, db = len(kappa), -math.inf, self.kern.entry_err
        n = k + 1
        with np.errstate(all="ignore"):
            for ratio in (0.0, *_GRID_RATIOS):
                bounds = (
                    _t_bounds_cheap_np(kappa, Z2, dk, db, k)
                    if ratio == 0
                    else _t_bounds_np(kappa, Z2, dk, db, k, ratio)
                )
                if bounds is None:
                    continue
                lb, ub = bounds
                if self.sign > 0:
                    o_lo, o_hi = -ub / n + lqp - lq_err, -lb / n + lqp + lq_err
                else:
                    o_lo, o_hi = lb / n - lqp - lq_err, ub / n - lqp + lq_err
                best = max(best, float(o_lo.max()))
                lb_all[rows] = np.maximum(lb_all[rows], lb)
                keep = o_hi >= best
                rows, Z, Z2, lqp = rows[keep], Z[keep], Z2[keep], lqp[keep]
                if len(rows) <= _REFINE_ABOVE:
                    break
        if not best > rest_hi:
            return None
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (rows, Z, Z2, lqp))

    def _remember(self, rows: torch.Tensor, lb: torch.Tensor) -> None:
        """Keep the certified lower bounds of ΔT for `_lazy_rows` (the larger of old and new)."""
        if self.lb is None:
            self.lb = torch.full((self.m,), -math.inf, dtype=torch.float64, device=lb.device)
        self.lb[rows] = torch.maximum(self.lb[rows], lb)


def _fingerprint(W: torch.Tensor) -> str:
    a = W.detach().contiguous().cpu()
    # SHA-1 for a cache key, not for security: with the CPU's SHA instructions it hashes the
    # default model's 3.5 MB matrix in a third of blake2b's time
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"{tuple(a.shape)}{a.dtype}".encode())
    if a.numel():
        h.update(a.view(torch.uint8).reshape(-1).numpy().data)  # the buffer itself, not a copy
    return h.hexdigest()


def vendi_select(
    W: torch.Tensor,
    r: int,
    *,
    use_quality: bool = False,
    min_diversity: bool = False,
    q: float = 1.0,
    bandwidth: float | str = 1.0,
    progress: bool | None = None,
) -> tuple[list[int], float]:
    """The exact greedy Vendi selection of r rows of W, in selection order, and the score of the
    chosen set (qVS with ``use_quality``). float64 on W's device; deterministic.

    Selections are cached by W's content and the options: a smaller r reuses the prefix, a larger
    r resumes the greedy where the cached one stopped. ``progress``: a bar over the steps (None:
    only for long selections, on a terminal)."""
    m = W.shape[0]
    r = min(r, m)
    if r <= 0:
        return [], 0.0
    bw = check_bandwidth(bandwidth)
    key = (_fingerprint(W), use_quality, min_diversity, float(q), bw)
    chosen, scores = _cache.get(key, ([], []))
    if len(chosen) >= r:
        _cache.move_to_end(key)
        return chosen[:r], math.exp(scores[r - 1])
    with torch.no_grad(), threads(_step_threads(W)):
        X = W.detach().to(torch.float64)  # shared by the median, the kernel and the check
        if not math.isfinite(float(torch.linalg.vector_norm(X))):
            raise LaserkitError("vendi-score: the matrix holds NaN or infinity")
        sigma = median_bandwidth(W) if bw == "median" else float(bw)  # W: as stored
        state = _resume(X, sigma, use_quality, min_diversity, float(q), chosen, scores)
        bar = _bar(r, len(chosen), m, progress)
        while len(state.chosen) < r:
            state.step()
            if bar is not None:
                bar.update(1)
        scores = list(state.scores)
    if bar is not None:
        bar.close()
    _cache[key] = (list(state.chosen), scores)
    _cache.move_to_end(key)
    while len(_cache) > _CACHE_ENTRIES:
        _cache.popitem(last=False)
    return list(state.chosen), math.exp(state.scores[-1])


def _resume(
    X: torch.Tensor,
    sigma: float,
    use_quality: bool,
    min_diversity: bool,
    q: float,
    chosen: list[int],
    scores: list[float],
) -> _Greedy:
    """A greedy state with the cached picks already taken."""
    state = _Greedy(X, sigma, use_quality, min_diversity, q)
    for c, s in zip(chosen, scores, strict=True):
        state.add(c, s)
    return state


def _step_threads(X: torch.Tensor) -> int | None:
    """CPU threads for a selection: one for matrices up to SMALL_ROWS_X_COLS entries, whose
    step operations are far below what a second thread pays off for and whose median Gram is
    small (on a busy 2-core machine OpenMP's spin-waiting made the default model's selection
    10× slower with two, its median 3×); None (leave as is) for larger matrices and other
    devices."""
    return 1 if X.device.type == "cpu" and X.numel() <= SMALL_ROWS_X_COLS else None


def _bar(r: int, done: int, m: int, progress: bool | None):
    if progress is False or (progress is None and (r - done) * m < 200_000):
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415 - only for long selections

    return tqdm(
        total=r,
        initial=done,
        desc=f"vendi {m} rows",
        unit="row",
        leave=False,
        disable=None if progress is None else False,
    )


def vendi_reconstruct(W: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """W Bᵀ (B Bᵀ)⁺ B with B = W[idx]: each row projected onto the span of the selected rows.

    Through the pseudo-inverse (an SVD), so duplicate or dependent selected rows are fine."""
    X = W.detach().to(torch.float64)
    if not idx:
        return torch.zeros_like(W)
    B = X[idx]
    return ((X @ torch.linalg.pinv(B)) @ B).to(W.dtype)


def vendi_reduce(
    W: torch.Tensor,
    rho: float,
    *,
    use_quality: bool = False,
    min_diversity: bool = False,
    q: float = 1.0,
    bandwidth: float | str = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Keep r = ⌊min(m,n)·ρ⌋ rows chosen by Vendi score; Ŵ (W's dtype/device) and the record."""
    m, n = W.shape
    r = kept_rank(m, n, rho)
    if r >= m:
        return W.clone(), {"selected": list(range(m)), "vendi_score": None}
    idx, score = vendi_select(
        W, r, use_quality=use_quality, min_diversity=min_diversity, q=q, bandwidth=bandwidth
    )
    return vendi_reconstruct(W, idx), {"selected": idx, "vendi_score": score}
