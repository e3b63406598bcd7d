"""Intervention kinds as small frozen dataclasses registered by name (docs/interventions.md).

Each kind (rank-reduction, vendi-score, ...) is one class in one file of ``kinds/``: its fields
with defaults and CLI metadata (``option``), its validation (``__post_init__``), ``describe`` (the
trial key's text), ``compute`` (W → Ŵ) and what the Editor needs (``svd``: which SVD factors it
reads from the cache). ``@register("name", "one line")`` puts it in ``KINDS``, the
``core.registry.Registry`` of intervention kinds (a package of another author may add kinds
through the entry-point group ``laserkit.interventions`` instead: docs/extending.md); it is then
accepted by ``Intervention(kind="name", ...)`` and ``from_dict``, and offered by the CLI.

Why a metaclass (not for registering, which is the Registry's job): ``Intervention(kind=...,
rho=..., ...)`` and ``Intervention.from_dict`` are the public way to build one (library, tests,
benchmarks, the search's stored specs), and ``Intervention`` is used as a type.
``_ByKind.__call__`` keeps both: called on ``Intervention`` it picks the kind's class and returns
an instance of it (a subclass of ``Intervention``); called on a kind's class it builds that kind
directly. A plain factory function would break the type and the classmethod.

This module and ``kinds/`` import no torch: the CLI builds its options from them at start-up
(``laserkit --help`` must stay fast); each kind imports its algorithm when it computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.errors import LaserkitError
from ..core.registry import Registry

if TYPE_CHECKING:
    import torch

    from .factors import Factors
    from .fast_svd import TopFactors

DEFAULT_KIND = "rank-reduction"
# name → kind class, in listing order (the shipped kinds first, then those of other packages)
KINDS: Registry[type[Intervention]] = Registry("intervention", group="interventions")


@dataclass(frozen=True)
class Alias:
    """A second CLI spelling of a field, converted to it (``--rate`` r → ρ = 1 − 0.1·r)."""

    flag: str
    name: str
    help: str
    to_field: Callable[[Any], Any]


def option(
    default: Any,
    flag: str,
    help: str,
    *,
    type: type | None = None,
    normalize: Callable[[Any], Any] | None = None,
    always_recorded: bool = True,
    alias: Alias | None = None,
) -> Any:
    """A field of a kind, with what the CLI needs to offer it.

    ``type``: the CLI's type (default: the default's type); ``normalize``: how a value is
    canonicalised (also used to tell whether another kind's option was left at its default);
    ``always_recorded``: False keeps the field out of ``to_dict`` while it has its default (so
    that records and trial keys written before the field existed keep their meaning)."""
    return field(
        default=default,
        metadata={
            "flag": flag,
            "help": help,
            "type": type or builtin_type(default),
            "normalize": normalize,
            "always_recorded": always_recorded,
            "alias": alias,
        },
    )


def builtin_type(value: Any) -> type:
    if value is None:
        raise TypeError("an option with default None needs its type")
    return type(value)


def kind_class(name: str) -> type[Intervention]:
    """The class registered as ``name``; one line listing the kinds otherwise. A class that an
    entry point names is checked and given its name on first use (``_adopt``)."""
    if not isinstance(name, str):  # a record's "kind": null or a list
        raise LaserkitError(f"unknown intervention {name!r}: use one of {', '.join(KINDS.names())}")
    cls = KINDS.get(name)
    if cls.__dict__.get("kind") != name:
        doc = (cls.__doc__ or "").strip().splitlines()
        _adopt(name, cls, cls.__dict__.get("summary") or (doc[0] if doc else ""))
    return cls


def owners(name: str) -> list[str]:
    """The kinds that have a field called ``name``."""
    return [k for k in KINDS.names() if name in field_map(kind_class(k))]


def uses_svd() -> list[str]:
    """The kinds that read cached SVD factors (the Editor keeps a factor cache for them)."""
    return [k for k in KINDS.names() if kind_class(k).svd is not None]


def field_map(cls: type[Intervention]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` is the field's default once normalised (``bandwidth="1"`` is 1.0)."""
    if value == f.default:
        return True
    norm = f.metadata.get("normalize")
    if norm is None:
        return False
    try:
        return norm(value) == f.default
    except LaserkitError:
        return False


def _foreign(kind: str, name: str, value: Any) -> None:
    """Refuse a field of another kind given with a value other than its default."""
    where = [(k, field_map(kind_class(k))[name]) for k in owners(name)]
    if not where:
        raise LaserkitError(
            f"{name!r} is no option of any intervention (the kinds are {', '.join(KINDS.names())})"
        )
    if all(_is_default(f, value) for _, f in where):
        return
    flag = where[0][1].metadata.get("flag", name)
    given = flag if isinstance(value, bool) else f"{flag} {value}"
    raise LaserkitError(f"{given} applies to {', '.join(k for k, _ in where)}, not to {kind}")


class _ByKind(type):
    """``Intervention(kind=..., **fields)`` builds the registered kind's class (see the module
    docstring for why)."""

    if TYPE_CHECKING:
        kind: str  # its instances are Intervention and its kinds, which all name their kind

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is not Intervention:
            kind = kwargs.pop("kind", cls.kind)
            if kind != cls.kind:
                raise LaserkitError(f"{cls.__name__} is {cls.kind!r}, not {kind!r}")
            return super().__call__(*args, **kwargs)
        if args:
            raise TypeError("Intervention takes keyword arguments (kind=..., rho=..., ...)")
        kind = kwargs.pop("kind", DEFAULT_KIND)
        spec = kind_class(kind)
        own = field_map(spec)
        for name in [n for n in kwargs if n not in own]:
            _foreign(kind, name, kwargs.pop(name))
        return spec(**kwargs)


class Intervention(metaclass=_ByKind):
    """What to do to a matrix: the base of every kind. Hashable (frozen dataclasses), equal when
    kind and fields are equal, and round-trips through a plain dict (trial stores, records).

    >>> Intervention(kind="vendi-score", rho=0.1, bandwidth="median")
    VendiScore(rho=0.1, use_quality=False, min_diversity=False, q=1.0, bandwidth='median')
    """

    kind: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for KINDS and the CLI's listings
    svd: ClassVar[str | None] = None  # cached SVD factors it reads: None, "compute" or "float64"
    noop: ClassVar[bool] = False  # changes nothing: the Editor skips it, no finiteness check
    if TYPE_CHECKING:
        # every kind is a frozen dataclass (_adopt checks it), so dataclasses.fields takes them
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

        # Intervention(kind=..., **options) returns the kind's class (_ByKind.__call__): what
        # a type checker must accept here; each kind's own dataclass __init__ is checked as usual
        def __init__(self, *args: Any, kind: str = ..., **options: Any) -> None: ...

    def factor_dtype(self, compute_dtype: torch.dtype) -> torch.dtype | None:
        """The dtype of the cached SVD factors ``compute`` takes, or None for none."""
        if self.svd is None:
            return None
        if self.svd == "compute":
            return compute_dtype
        import torch  # noqa: PLC0415 - torch-free import path (module docstring)

        return getattr(torch, self.svd)

    def factor_rank(self, shape: tuple[int, int]) -> int | None:
        """How many leading singular vectors ``compute`` needs (an int: the cache holds only
        those, fast_svd.TopFactors), or None for the full SVD (``Factors``)."""
        return None

    def to_dict(self) -> dict:
        """``{"kind", "rho", fields...}``: ρ is in every record (None where the kind keeps no
        fraction of the rank) because reports and older readers look it up; a field with
        ``always_recorded=False`` appears only when it differs from its default."""
        d: dict[str, Any] = {"kind": self.kind, "rho": None}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("always_recorded", True) or value != f.default:
                d[f.name] = value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Intervention:
        """From ``to_dict``'s output (or an older record): the kind's own fields are read, the
        rest ignored (mp-threshold records carry ``"rho": null``, compose templates a ρ)."""
        spec = kind_class(d.get("kind", DEFAULT_KIND))
        own = field_map(spec)
        return spec(**{k: v for k, v in d.items() if k in own})

    def describe(self) -> str:
        """The readable text trial keys are made of: ``kind(ρ=…, flag, name=value)`` with the
        flags that are set and the fields that differ from their defaults; just ``kind`` when
        there is nothing to say. Changing it changes the keys of stored trials."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "rho":
                parts.append(f"ρ={value:g}")
            elif value == f.default:
                continue
            elif isinstance(value, bool):
                parts.append(f.name)
            elif isinstance(value, str):
                parts.append(f"{f.name}={value}")
            else:
                parts.append(f"{f.name}={format(value, 'g')}")
        return f"{self.kind}({', '.join(parts)})" if parts else self.kind

    def compute(
        self, W: torch.Tensor, factors: Factors | TopFactors | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Ŵ from W (float32 or float64, (out, in)) and facts for the record (at least
        ``rank``). ``factors``: the SVD of W in ``factor_dtype``'s dtype, when the kind reads
        them and W is the original matrix (only the top ``factor_rank`` vectors, TopFactors,
        where that is an int); otherwise None."""
        raise NotImplementedError


def register(name: str, summary: str) -> Callable[[type[Intervention]], type[Intervention]]:
    """Class decorator: make a frozen dataclass subclass of Intervention the kind ``name``, with
    ``summary`` as its line in listings; a name registered twice is an error."""

    def deco(cls: type[Intervention]) -> type[Intervention]:
        _adopt(name, cls, summary)
        KINDS.register(name, cls)
        return cls

    return deco


def _adopt(name: str, cls: type[Intervention], summary: str) -> None:
    """Check that ``cls`` can be a kind and give it its name and summary. Whether its fields
    agree with other kinds' fields of the same name is checked where the CLI collects them
    (cli/options.py), so that no kind is imported here."""
    if not (
        isinstance(cls, type)
        and issubclass(cls, Intervention)
        and dataclasses.is_dataclass(cls)
        # typeshed's DataclassInstance declares no __dataclass_params__ (set by @dataclass)
        and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    ):
        raise TypeError(f"{name}: a kind is a @dataclass(frozen=True) subclass of Intervention")
    if cls.svd not in (None, "compute", "float64"):
        raise ValueError(f"{cls.__name__}.svd must be None, 'compute' or 'float64'")
    for f in dataclasses.fields(cls):
        if "flag" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare fields with option(...)")
    cls.kind = name
    cls.summary = summary


def unregister(name: str) -> None:
    """Remove a kind (tests register throwaway kinds and take them back)."""
    KINDS.unregister(name)


def _rho_from_rate(rate: float) -> float:
    from .rank_reduction import rho_from_rate  # noqa: PLC0415 - torch-free import path

    return rho_from_rate(rate)


def rho_option() -> Any:
    """ρ, the fraction of the rank kept: the field of every kind that keeps ⌊ρ·min(m, n)⌋ of
    something (searches sweep it), with the reference CLI's ``--rate`` as a second spelling."""
    return option(
        None,
        "--rho",
        "fraction of the rank kept, in [0, 1]",
        type=float,
        alias=Alias(
            "--rate", "rate", "reference CLI rate in [0, 10]: ρ = 1 − 0.1·rate", _rho_from_rate
        ),
    )


def check_rho_of(kind: str, rho: float | None) -> None:
    """Kinds with a ρ: it is required and in [0, 1]."""
    from .rank_reduction import check_rho  # noqa: PLC0415 - torch-free import path

    if rho is None:
        raise LaserkitError(f"{kind} needs --rho (0..1) or --rate (0..10)")
    check_rho(rho)
