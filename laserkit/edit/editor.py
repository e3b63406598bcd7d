"""Apply interventions to a model in place, reversibly, and compose several of them.

Only the rows an edit touches are copied (to CPU, in the weight's own dtype), so restoring is
bit-exact without keeping a copy of the model. SVD factors of original matrices are cached so a
search over many ρ decomposes each matrix once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import LaserkitError
from ..interventions import Factors, Intervention, check_finite, compute, kept_rank
from ..interventions.fast_svd import TopFactors, decompose
from ..model.placement import OffloadSlot, offload_slot, parameter
from ..model.targets import Layout, Target, model_layout, resolve
from .record import EditRecord

CPU_FACTOR_BYTES = 4 << 30  # the factor cache's default budget on the CPU
GPU_FACTOR_SHARE = 4  # on a GPU: a quarter of the memory free when the cache first uses it


class FactorCache:
    """SVD factors of original matrices, least recently used first out past a budget.

    Full SVDs (``get(key, W)``) or the top-k vectors (``get(key, W, k)``, fast_svd.TopFactors):
    those are decomposed to the largest rank the run will ask for (``rho_hint``, the grid's
    largest ρ), so one decomposition still serves every ρ.

    Factors stay on the device they were computed on (the matrix's), and each device has its
    own budget and its own LRU order: ``max_bytes`` an int (the same for every device), a dict
    of device name (``cpu``, ``cuda:1``, or a type, ``cuda``) → bytes, or None: 4 GiB on the
    CPU, a quarter of a GPU's free memory when the cache first meets it (docs/models.md)."""

    def __init__(
        self, max_bytes: int | dict[str, int] | None = None, rho_hint: float | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.rho_hint = rho_hint
        self._items: OrderedDict[tuple, Factors | TopFactors] = OrderedDict()
        self._budgets: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    def budget(self, device: torch.device) -> int:
        """The bytes of factors ``device`` may hold."""
        name = str(device)
        if name not in self._budgets:
            self._budgets[name] = self._default_budget(device)
        return self._budgets[name]

    def _default_budget(self, device: torch.device) -> int:
        given = self.max_bytes
        if isinstance(given, dict):
            given = given.get(str(device), given.get(device.type))
        if given is not None:
            return int(given)
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0] // GPU_FACTOR_SHARE
        return CPU_FACTOR_BYTES

    @staticmethod
    def _device(f: Factors | TopFactors) -> torch.device:
        return f.V.device if isinstance(f, TopFactors) else f.U.device

    def held_bytes(self) -> dict[str, int]:
        """Bytes of factors held, per device."""
        out: dict[str, int] = {}
        for f in self._items.values():
            name = str(self._device(f))
            out[name] = out.get(name, 0) + self._size(f)
        return out

    @staticmethod
    def _size(f: Factors | TopFactors) -> int:
        if isinstance(f, TopFactors):
            return f.nbytes()
        return sum(t.numel() * t.element_size() for t in (f.U, f.S, f.Vh))

    def _planned_rank(self, shape: tuple[int, int], k: int) -> int:
        if self.rho_hint is None:
            return k
        return max(k, kept_rank(*shape, self.rho_hint))

    def get(self, key: tuple, W: torch.Tensor, k: int | None = None) -> Factors | TopFactors:
        """The factors of W (stored under ``key``): full SVD, or at least the top ``k``."""
        key = (*key, "full" if k is None else "top")
        f = self._items.get(key)
        if f is not None and (k is None or (isinstance(f, TopFactors) and k <= f.kmax)):
            self.hits += 1
            self._items.move_to_end(key)
            return f
        self.misses += 1
        rows, cols = W.shape
        f = Factors.of(W) if k is None else decompose(W, self._planned_rank((rows, cols), k))
        self._items[key] = f
        self._evict(self._device(f))
        return f

    def _evict(self, device: torch.device) -> None:
        """Drop ``device``'s least recently used factors past its budget, keeping the newest."""
        limit = self.budget(device)
        while True:
            mine = [k for k, f in self._items.items() if self._device(f) == device]
            if len(mine) <= 1 or sum(self._size(self._items[k]) for k in mine) <= limit:
                return
            del self._items[mine[0]]


_ABSENT = object()  # an offload overlay that had no entry for the key before the write


def _put(view: torch.Tensor, index: torch.Tensor | None, value: torch.Tensor) -> None:
    """Write ``value`` into ``view`` (the rows ``index``, or all of it), on the view's device
    and in its dtype."""
    value = value.to(device=view.device, dtype=view.dtype)
    if index is None:
        view.copy_(value)
    else:
        view[index.to(view.device)] = value


@dataclass
class _Undo:
    """What one write replaced: enough to put it back bit for bit."""

    param: str
    transposed: bool
    index: torch.Tensor | None
    previous: Any  # CPU copy of the rows before the write, in the weight's dtype; for an
    # offloaded weight, the overlay's entry before the write (the tensor itself, or _ABSENT)
    slot: OffloadSlot | None = None


def _view(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    return weight.T if transposed else weight


class Editor:
    """Edits one model in place, with an undo stack.

    ``apply`` may be called many times (composition); ``restore()`` undoes everything and
    ``restore(to=mark)`` undoes back to a ``mark()`` (laserRMT's greedy drops one step at a time).

    >>> ed = Editor(model)
    >>> ed.apply("fc_in", 26, Intervention(rho=0.01))
    >>> ed.restore()                      # weights are bit-for-bit the originals again

    A model spread over devices (``device_map``): each edit is computed on the device its
    matrix's module runs on; a weight accelerate offloaded (on ``meta``, its value in the hook's
    ``weights_map``) is edited by putting the new tensor in the map's in-memory overlay, never
    into the files behind it, and restore puts the overlay's entry back (docs/models.md).
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout | None = None,
        compute_dtype: torch.dtype = torch.float32,
        cache: FactorCache | None = None,
    ) -> None:
        if compute_dtype not in (torch.float32, torch.float64):
            raise LaserkitError("compute dtype must be float32 or float64")
        self.model = model
        self.layout = layout or model_layout(model)
        self.compute_dtype = compute_dtype
        self.cache = cache if cache is not None else FactorCache()
        self._slots: dict[str, OffloadSlot | None] = {}
        self._undo: list[_Undo] = []
        self._marks: list[int] = []  # len(records) at each undo entry, to trim records on restore
        self.records: list[EditRecord] = []

    def targets(self, lname: str, lnum: str | int = "all") -> list[Target]:
        return resolve(self.layout, lname, lnum)

    def _slot(self, param: str) -> OffloadSlot | None:
        if param not in self._slots:
            self._slots[param] = offload_slot(self.model, param)
        return self._slots[param]

    def _current(self, param: str) -> tuple[torch.Tensor, torch.device]:
        """The weight's value now and the device its edits are computed on."""
        slot = self._slot(param)
        if slot is not None:
            return slot.get(), slot.device
        w = parameter(self.model, param).data
        return w, w.device

    def read(self, t: Target) -> torch.Tensor:
        """The target's current matrix (out, in) as a new tensor in the compute dtype, on the
        device its module runs on."""
        weight, dev = self._current(t.param)
        view = _view(weight, t.transposed)
        idx = t.row_index()
        block = view if idx is None else view[idx.to(view.device)]
        return block.to(device=dev, dtype=self.compute_dtype, copy=True)

    def _write(self, t: Target, value: torch.Tensor) -> None:
        slot = self._slot(t.param)
        idx = t.row_index()
        if slot is not None:
            before = slot.store.get(slot.key, _ABSENT)
            weight = slot.get().clone()  # the entry (or the file's tensor) is never written
            self._undo.append(_Undo(t.param, t.transposed, idx, before, slot))
            self._marks.append(len(self.records))
            _put(_view(weight, t.transposed), idx, value)
            slot.store[slot.key] = weight
            return
        view = _view(parameter(self.model, t.param).data, t.transposed)
        before = view if idx is None else view[idx.to(view.device)]
        self._undo.append(_Undo(t.param, t.transposed, idx, before.detach().to("cpu", copy=True)))
        self._marks.append(len(self.records))
        _put(view, idx, value)

    def _touched(self, param: str) -> bool:
        return any(u.param == param for u in self._undo)

    def apply_targets(self, targets: list[Target], iv: Intervention) -> list[EditRecord]:
        """Apply ``iv`` to each target; returns (and keeps) one record per edited matrix."""
        new: list[EditRecord] = []
        with torch.no_grad():
            for t in targets:
                W = self.read(t)
                factors = None
                # the kind says which factors it reads (MP: float64 as in laserRMT; LASER: the
                # compute dtype); only an untouched matrix's factors are the cached ones
                dtype = iv.factor_dtype(self.compute_dtype)
                if dtype is not None and not self._touched(t.param):
                    check_finite(W, t.param)  # before the SVD, which would fail unreadably
                    rows, cols = W.shape
                    factors = self.cache.get(
                        (t.param, t.rows, dtype), W.to(dtype), iv.factor_rank((rows, cols))
                    )
                out, info = compute(W, iv, factors, name=t.param)
                norm = float(W.norm())
                info["rel_error"] = float((W - out).norm()) / norm if norm else 0.0
                self._write(t, out)
                rec = EditRecord.of(t, tuple(W.shape), iv, info)
                self.records.append(rec)
                new.append(rec)
        return new

    def apply(self, lname: str, lnum: str | int, iv: Intervention) -> list[EditRecord]:
        """Resolve (lname, lnum) and apply ``iv`` there."""
        if iv.noop or lname == "dont":
            return []
        targets = self.targets(lname, lnum)
        if not targets:
            raise LaserkitError(f"{lname!r} at layers {lnum} resolves to no matrix in this model")
        return self.apply_targets(targets, iv)

    def mark(self) -> int:
        """A point to come back to with ``restore(to=...)``."""
        return len(self._undo)

    def restore(self, to: int = 0) -> None:
        """Undo every write made after ``mark`` ``to`` (default: all), newest first."""
        with torch.no_grad():
            while len(self._undo) > to:
                u = self._undo.pop()
                del self.records[self._marks.pop() :]
                if u.slot is not None:
                    if u.previous is _ABSENT:
                        u.slot.store.pop(u.slot.key, None)
                    else:
                        u.slot.store[u.slot.key] = u.previous
                    continue
                view = _view(parameter(self.model, u.param).data, u.transposed)
                _put(view, u.index, u.previous)

    @property
    def edited(self) -> bool:
        return bool(self._undo)
