"""Streaming spectral scan: statistics of every weight matrix, read one tensor at a time; a 1-D
weight (a norm scale) is scanned as a 1×n matrix, as Spectrum scans it (biases are not).

The model is never built. Each matrix is read from the checkpoint, its singular values found (the
Gram route of spectral.py, on the GPU when there is one), and its record written at once to
``out_dir/matrices/<module>.safetensors`` (singular values + statistics, atomic rename). A scan
that is killed resumes from those files; a later scan of the same checkpoint reuses them.

Module type and layer come from targets.names_layout (exact block/layer matching, roles from
architectures.py). Outside the blocks (embeddings, head) the type is the module name, as Spectrum
writes it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._version import __version__
from ..core.errors import LaserkitError
from ..core.fileio import atomic_file, atomic_write_text, check_writable_parent, refuse_file
from ..io.checkpoint import Checkpoint
from ..io.open import open_checkpoint
from ..io.source import pick_device
from ..model.architectures import FUSED, GROUPS, ROLES
from ..model.targets import names_layout, parse_layers
from .mp import SMALL_EIG, matrix_stats
from .mp import threads as cpu_threads

STAT_KEYS = (
    "sigma_hat",
    "mp_threshold",
    "n_above",
    "snr",
    "snr_over_smax",
    "spectral_norm",
    "stable_rank",
    "effective_rank",
)
METHOD = "gram-eigvalsh-float64"
SCAN_JSON = "scan.json"
SPECTRUM_JSON = "snr_results.json"
CSV_NAME = "scan.csv"
HEATMAP = "snr_heatmap.png"
SPECTRUM_TIED_HEAD = "lm_head"  # the causal-LM head module Spectrum scans even when tied
_DIGIT_PART = re.compile(r"^(?P<head>.*?)\.(?P<idx>\d+)\.(?P<rest>.+)$")


@dataclass
class MatrixRecord:
    """One scanned matrix: where it sits, what it is, and its spectrum statistics."""

    name: str  # tensor name in the checkpoint, e.g. model.layers.3.mlp.down_proj.weight
    module: str  # the name without ``.weight`` (Spectrum's key)
    type: str  # Spectrum's module type: path inside the block, or the module name outside
    layer: int | None  # block index; None outside the blocks
    role: str | None  # laserkit role (fc_in, q_proj, ...), "fused:<name>", or None
    shape: tuple[int, int]
    dtype: str
    stats: dict  # STAT_KEYS + note
    s: torch.Tensor | None = None  # singular values, descending, float64

    def row(self) -> dict:
        """The record without singular values, for JSON and CSV."""
        return {
            "name": self.name,
            "module": self.module,
            "type": self.type,
            "layer": self.layer,
            "role": self.role,
            "shape": list(self.shape),
            "dtype": self.dtype,
            **{k: self.stats[k] for k in STAT_KEYS},
            "note": self.stats.get("note", ""),
        }


@dataclass
class ScanResult:
    """All records of one scan, in a fixed order (outside-block matrices first, then by layer)."""

    source: str
    fingerprint: str
    num_layers: int
    records: list[MatrixRecord]
    skipped: dict[str, str] = field(default_factory=dict)  # tensor name → why it has no spectrum
    reused: int = 0  # records read back from an earlier (or interrupted) scan
    out_dir: Path | None = None

    def spectrum_entries(self, empty_noise: str = "sum") -> dict[str, dict]:
        """Spectrum's JSON layout: {module: {"snr": SNR/s_max, "type": type}}, in Spectrum's
        order (types sorted as its weight-type dialog lists them, each type's modules in layer
        order). ``empty_noise`` (spectrum.EMPTY_NOISE) values a matrix with no noise singular
        value. A head tied to the embedding has no tensor of its own, but Spectrum scans the
        ``lm_head`` module all the same: it gets the embedding's value, as there."""
        from .spectrum import check_empty_noise, special_modules, type_order

        check_empty_noise(empty_noise)
        rows = [
            (r.module, r.type, _layer_key(r), self._spectrum_value(r, empty_noise))
            for r in self.records
        ]
        embed, head = special_modules(r.module for r in self.records if r.layer is None)
        if embed is not None and head is None and SPECTRUM_TIED_HEAD not in {m for m, *_ in rows}:
            value = next(v for m, _, _, v in rows if m == embed)
            rows.append((SPECTRUM_TIED_HEAD, SPECTRUM_TIED_HEAD, -1, value))
        order = {t: i for i, t in enumerate(type_order([t for _, t, _, _ in rows]))}
        rows.sort(key=lambda x: (order[x[1]], x[2], x[0]))
        return {m: {"snr": v, "type": t} for m, t, _, v in rows}

    def _spectrum_value(self, r: MatrixRecord, empty_noise: str) -> float:
        """SNR/s_max as Spectrum computes it: where no singular value is at or below τ, current
        Spectrum divides by a noise of 1 (ΣS/s_max), older Spectrum gave ∞ (laserkit's SNR)."""
        v = r.stats["snr_over_smax"]
        if (
            empty_noise == "inf"
            or not math.isinf(v)
            or not r.stats["spectral_norm"] > 0
            or r.stats["n_above"] < min(r.shape)
        ):
            return v
        if min(r.shape) == 1:
            return 1.0
        s = r.s
        if s is None and self.out_dir is not None:
            stored = _load_matrix(_matrix_file(self.out_dir, r.module))
            s = stored.s if stored is not None else None
        if s is None:
            raise LaserkitError(
                f"{r.module} has no noise singular value, and its singular values "
                "(matrices/ in the scan directory) are needed for Spectrum's "
                "ΣS/s_max; rescan, or use --empty-noise inf"
            )
        return float(s.double().sum() / s.double().max())


def _layer_key(r: MatrixRecord) -> int:
    return -1 if r.layer is None else r.layer


# ----------------------------------------------------------------------------- planning


def plan(
    ckpt: Checkpoint, types: str | list[str] | None = None, layers: str | None = None
) -> tuple[list[MatrixRecord], dict[str, str], int]:
    """The matrices a scan will cover (without statistics), the tensors skipped, #layers."""
    shapes = ckpt.shapes()
    layout = names_layout(shapes, ckpt.config)
    in_blocks = {f"{m.module}.weight": m for m in layout.matrices}
    records: list[MatrixRecord] = []
    skipped: dict[str, str] = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and name.endswith(".weight") and shape[0] > 0:
            shape = (1, shape[0])  # a norm scale: Spectrum scans it unsqueezed to 1×n
        if len(shape) != 2:
            skipped[name] = (
                "1-D bias: Spectrum scans module weights only"
                if len(shape) == 1
                else f"{len(shape)}-D tensor: not a matrix"
            )
            continue
        if 0 in shape:
            skipped[name] = "empty matrix"
            continue
        module = name.removesuffix(".weight")
        m = in_blocks.get(name)
        layer: int | None
        if m is not None:
            layer, typ, role = m.layer, m.rel, m.role
        else:  # outside the main blocks: Spectrum's rule (path after the first index, else name)
            hit = _DIGIT_PART.match(module)
            if hit:
                idx = int(hit["idx"])
                layer, typ, role = (idx if idx < layout.num_layers else None), hit["rest"], None
            else:
                layer, typ, role = None, module, None
        records.append(
            MatrixRecord(
                name, module, typ, layer, role, (shape[0], shape[1]), ckpt.dtype_name(name), {}
            )
        )
    records = _filter(records, types, layers, layout)
    records.sort(key=lambda r: (_layer_key(r), r.module))
    return records, skipped, layout.num_layers


def _holds(role: str | None, wanted: str) -> bool:
    """Does a matrix of this role hold ``wanted``? A fused matrix holds each of its parts."""
    if role == wanted:
        return True
    return bool(role and role.startswith("fused:") and wanted in FUSED[role[6:]])


def matches(rec: MatrixRecord, part: str) -> bool:
    """Exact selection: a group (mlp, attn), a role (fc_in, q_proj ...), a type or a module."""
    if part in GROUPS:
        return any(_holds(rec.role, r) for r in GROUPS[part])
    if part in ROLES:
        return _holds(rec.role, part)
    return part in (rec.type, rec.module)


def _parts(types: str | list[str] | None) -> list[str]:
    if types is None:
        return []
    items = types.split(",") if isinstance(types, str) else list(types)
    return [p.strip() for p in items if p.strip()]


def _filter(
    records: list[MatrixRecord], types: str | list[str] | None, layers: str | None, layout
) -> list[MatrixRecord]:
    parts = _parts(types)
    if parts:
        offered = list(layout.lnames()) + sorted({r.type for r in records if r.layer is None})
        unknown = [p for p in parts if p not in offered and not any(matches(r, p) for r in records)]
        if unknown:
            raise LaserkitError(
                f"unknown module type {unknown[0]!r}: this model offers {', '.join(offered)}"
            )
        records = [r for r in records if any(matches(r, p) for p in parts)]
    if layers is not None and layers != "all":
        keep = set(parse_layers(layers, layout.num_layers))
        records = [r for r in records if r.layer in keep]
    if not records:
        raise LaserkitError("no matrices match the --types/--layers given")
    return records


# ----------------------------------------------------------------------------- storage


def _matrix_file(out_dir: Path, module: str) -> Path:
    return out_dir / "matrices" / f"{module}.safetensors"


def _save_matrix(path: Path, rec: MatrixRecord, fingerprint: str) -> None:
    """Singular values + record, written to a temporary sibling and renamed into place."""
    from safetensors.torch import save_file

    s = rec.s
    if s is None:
        raise ValueError(f"{rec.module}: no singular values to save")
    meta = {"record": json.dumps(rec.row()), "fingerprint": fingerprint, "method": METHOD}
    atomic_file(path, lambda tmp: save_file({"s": s.contiguous()}, str(tmp), metadata=meta))


def _stored_fingerprint(path: Path) -> str | None:
    """The checkpoint fingerprint a stored matrix file was computed from (None: unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except Exception:  # a damaged file is recomputed anyway
        return None


def check_out_dir(out: Path, fingerprint: str, source: str) -> None:
    """Refuse an --out that is a file, or a directory holding anything but a scan of this same
    checkpoint: results of two models must never be mixed, nor someone's files replaced."""
    refuse_file(out)
    check_writable_parent(out, "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    theirs = None
    if (out / SCAN_JSON).is_file():
        try:
            doc = json.loads((out / SCAN_JSON).read_text())
            theirs = (doc["fingerprint"], doc.get("source", "?"))
        except (ValueError, KeyError, TypeError):
            raise LaserkitError(
                f"--out {out} holds a {SCAN_JSON} that is not a laserkit scan; choose another --out"
            ) from None
    elif (out / "matrices").is_dir():
        for f in sorted((out / "matrices").glob("*.safetensors")):
            fp = _stored_fingerprint(f)
            if fp is not None:
                theirs = (fp, "an interrupted scan")
                break
    else:
        raise LaserkitError(
            f"--out {out} is not empty and holds no laserkit scan; choose a new or "
            "empty directory (nothing was written)"
        )
    if theirs is not None and theirs[0] != fingerprint:
        raise LaserkitError(
            f"--out {out} holds the scan of another checkpoint ({theirs[1]}), not "
            f"of {source}; choose another --out or delete it (nothing was written)"
        )


def _load_matrix(path: Path, fingerprint: str | None = None) -> MatrixRecord | None:
    """A stored record, or None when absent, unreadable or from another checkpoint/method."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("method") != METHOD:
                return None
            if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                return None
            s = f.get_tensor("s")
        row = json.loads(meta["record"])
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None
    stats = {k: row[k] for k in STAT_KEYS}
    stats["note"] = row.get("note", "")
    return MatrixRecord(
        row["name"],
        row["module"],
        row["type"],
        row["layer"],
        row["role"],
        tuple(row["shape"]),
        row["dtype"],
        stats,
        s,
    )


# ----------------------------------------------------------------------------- scanning


def scan(
    source: str | os.PathLike | Checkpoint,
    out_dir: str | os.PathLike | None = None,
    *,
    types: str | list[str] | None = None,
    layers: str | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
) -> ScanResult:
    """Scan every selected 2-D weight of a checkpoint; write results into ``out_dir`` if given.

    With ``resume`` (default), matrices already stored in ``out_dir`` for this same checkpoint are
    read back instead of recomputed, so an interrupted scan continues where it stopped.
    ``threads``: the CPU cores to use (None: torch's default, every core): small matrices are
    scanned that many at a time, one thread each; large ones one at a time with every thread.
    """
    from tqdm.auto import tqdm

    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source)
    dev = pick_device(device)
    fingerprint = ckpt.fingerprint()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out, fingerprint, str(getattr(ckpt, "source", source)))
    records, skipped, num_layers = plan(ckpt, types, layers)
    done: list[MatrixRecord] = []
    reused = 0
    workers = threads or torch.get_num_threads()
    pending: deque[tuple[MatrixRecord, Future]] = deque()

    def finish(planned: MatrixRecord, stats: dict) -> None:
        planned.s = stats.pop("s")
        planned.stats = {k: stats[k] for k in (*STAT_KEYS, "note")}
        if out is not None:
            _save_matrix(_matrix_file(out, planned.module), planned, fingerprint)
        done.append(planned)

    def drain(keep: int = 0) -> None:
        while len(pending) > keep:
            planned, fut = pending.popleft()
            finish(planned, fut.result())

    bar = tqdm(
        records, desc="scan", unit="matrix", disable=None if progress else True, dynamic_ncols=True
    )  # None: no bar when stderr is not a terminal
    # Small matrices run side by side, one thread each (LAPACK gains nothing from threads below
    # ~1000×1000 and OpenMP spin-waits cost seconds on a busy machine); a large one runs alone
    # with every thread. Peak memory is that of the largest matrix, as when scanning one by one.
    with (
        ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool,
        cpu_threads(1),
    ):
        for planned in bar:
            bar.set_postfix_str(planned.module, refresh=False)
            cached = (
                _load_matrix(_matrix_file(out, planned.module), fingerprint)
                if out is not None and resume
                else None
            )
            if cached is not None:
                drain()
                done.append(cached)
                reused += 1
                continue
            w = ckpt.get(planned.name).to(dev)
            if w.dim() == 1:
                w = w.unsqueeze(0)  # Spectrum's weights.unsqueeze(0)
            if dev.type == "cpu" and workers > 1 and min(planned.shape) <= SMALL_EIG:
                drain(keep=workers - 1)
                pending.append((planned, pool.submit(matrix_stats, w)))
            else:
                drain()
                with cpu_threads(workers):
                    finish(planned, matrix_stats(w))
            del w
        drain()
    bar.close()
    result = ScanResult(
        str(getattr(ckpt, "source", source)), fingerprint, num_layers, done, skipped, reused, out
    )
    if out is not None:
        write_outputs(result, out, filters={"types": types, "layers": layers}, plots=plots)
    return result


def write_outputs(
    result: ScanResult, out: Path, *, filters: dict | None = None, plots: bool = True
) -> None:
    """scan.json (every statistic), Spectrum's JSON, CSV and the heatmap, each atomically."""
    from .spectrum import dumps_json

    doc = {
        "laserkit_version": __version__,
        "source": result.source,
        "fingerprint": result.fingerprint,
        "method": METHOD,
        "num_layers": result.num_layers,
        "filters": filters or {},
        "matrices": [r.row() for r in result.records],
        "skipped": result.skipped,
    }
    atomic_write_text(out / SCAN_JSON, dumps_json(doc) + "\n")
    atomic_write_text(out / SPECTRUM_JSON, dumps_json(result.spectrum_entries()) + "\n")
    atomic_write_text(out / CSV_NAME, to_csv(result))
    if plots:
        from .plots import snr_heatmap

        snr_heatmap(result, out / HEATMAP)


def to_csv(result: ScanResult) -> str:
    """One row per matrix; non-finite values are written as inf / nan."""
    buf = io.StringIO()
    cols = ["module", "type", "layer", "role", "rows", "cols", "dtype", *STAT_KEYS, "note"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in result.records:
        row = r.row()
        w.writerow(
            [
                r.module,
                r.type,
                "" if r.layer is None else r.layer,
                r.role or "",
                r.shape[0],
                r.shape[1],
                r.dtype,
                *(_fmt(row[k]) for k in STAT_KEYS),
                row["note"],
            ]
        )
    return buf.getvalue()


def _fmt(v: float | int) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v)) if math.isfinite(v) else ("nan" if math.isnan(v) else "inf")


def load_scan(out_dir: str | os.PathLike, *, with_s: bool = True) -> ScanResult:
    """A finished scan read back from its directory (singular values from matrices/)."""
    out = Path(out_dir)
    path = out / SCAN_JSON
    if not path.is_file():
        raise LaserkitError(f"{out} holds no scan ({SCAN_JSON} missing): run `laserkit scan`")
    try:
        doc = json.loads(path.read_text())
        rows = doc["matrices"]
    except (ValueError, KeyError):
        raise LaserkitError(f"{path} is not a laserkit scan file") from None
    records = []
    for row in rows:
        stored = _load_matrix(_matrix_file(out, row["module"])) if with_s else None
        stats = {k: row[k] for k in STAT_KEYS}
        stats["note"] = row.get("note", "")
        records.append(
            MatrixRecord(
                row["name"],
                row["module"],
                row["type"],
                row["layer"],
                row["role"],
                tuple(row["shape"]),
                row["dtype"],
                stats,
                stored.s if stored is not None else None,
            )
        )
    return ScanResult(
        doc["source"],
        doc["fingerprint"],
        doc["num_layers"],
        records,
        doc.get("skipped", {}),
        0,
        out,
    )


def lowest_snr(
    result: ScanResult, k: int = 15, types: str | list[str] | None = "mlp,attn"
) -> list[tuple[str, int, str]]:
    """laserRMT's candidate list: the k block matrices of lowest SNR, as (module, layer, lname).

    The lname is the matrix's role (fc_in, q_proj ...) — or its path inside the block for fused
    or unrecognised matrices — so ``resolve(layout, lname, layer)`` names exactly this matrix.
    NaN SNRs (undefined spectra) are left out.
    """
    parts = _parts(types)
    pool = [
        (r, r.layer)
        for r in result.records
        if r.layer is not None
        and not math.isnan(r.stats["snr"])
        and (not parts or any(matches(r, p) for p in parts))
    ]
    pool.sort(key=lambda rl: (rl[0].stats["snr"], rl[1], rl[0].module))
    return [(r.module, layer, r.role if r.role in ROLES else r.type) for r, layer in pool[:k]]
