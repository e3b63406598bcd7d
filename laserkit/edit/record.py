"""What one edit did to one matrix, as a typed value: where (τ, layer, module, rows), the
intervention applied, and what it reported (rank kept, relative error, the kind's own numbers).

The in-memory ``Editor`` and the out-of-core writers (safetensors, GGUF) make the same record,
and a saved model lists them in laserkit.json (laserkit.io.save). ``to_json`` writes laserkit
0.1's flat record, key for key: the location, then the intervention's ``to_dict``, then the
report, so saved models and their readers see no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..interventions import Intervention
from ..model.targets import Target

LOCATION = ("lname", "layer", "module", "rows", "transposed", "shape")


@dataclass
class EditRecord:
    """One edited matrix. ``rank`` and ``rel_error`` are in every kind's report."""

    lname: str
    layer: int
    module: str
    rows: tuple[tuple[int, int], ...] | None  # row ranges of a fused weight; None: all of it
    transposed: bool
    shape: list[int]
    intervention: dict[str, Any]  # Intervention.to_dict()
    report: dict[str, Any] = field(default_factory=dict)  # interventions.compute's, + rel_error

    @classmethod
    def of(
        cls, t: Target, shape: tuple[int, ...], iv: Intervention, report: dict[str, Any]
    ) -> EditRecord:
        return cls(
            t.lname, t.layer, t.module, t.rows, t.transposed, list(shape), iv.to_dict(), report
        )

    @property
    def rank(self) -> int | None:
        return self.report.get("rank")

    @property
    def rel_error(self) -> float | None:
        return self.report.get("rel_error")

    @property
    def kind(self) -> str:
        return str(self.intervention.get("kind"))

    @property
    def rho(self) -> float | None:
        return self.to_json().get("rho")

    # laserkit 0.1's records were dicts (``Editor.apply`` is public): reading one by key, as
    # ``rec["rank"]``, still works, on the JSON form
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def to_json(self) -> dict[str, Any]:
        where = {k: getattr(self, k) for k in LOCATION}
        return {**where, **self.intervention, **self.report}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EditRecord:
        """From a stored record: the intervention's keys are those its kind writes."""
        mine = set(Intervention.from_dict(d).to_dict())
        iv = {k: v for k, v in d.items() if k in mine}
        report = {k: v for k, v in d.items() if k not in mine and k not in LOCATION}
        return cls(
            lname=d["lname"],
            layer=d["layer"],
            module=d["module"],
            rows=d.get("rows"),
            transposed=bool(d.get("transposed", False)),
            shape=list(d.get("shape") or []),
            intervention=iv,
            report=report,
        )
