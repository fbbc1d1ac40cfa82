"""A parity check: the worst relative error over named tensors against a tolerance."""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Check:
    name: str                 # e.g. "grad/total"
    max_rel_err: float        # max over tensors of ||jax - torch|| / max(||torch||, tiny)
    tolerance: float
    worst: str                # the tensor with the largest error: where to look first
    errors: Mapping[str, float] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def passed(self) -> bool:
        # `not (x > tol)` would pass NaN; a NaN error must fail.
        return bool(self.max_rel_err <= self.tolerance)

    def as_json(self) -> dict:
        return {"name": self.name, "max_rel_err": self.max_rel_err, "tolerance": self.tolerance,
                "passed": self.passed, "worst": self.worst, "errors": dict(self.errors)}

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        return (f"{status} {self.name:<32} max_rel_err={self.max_rel_err:.3e} "
                f"tol={self.tolerance:.0e}  worst={self.worst}")


def check_from_errs(name: str, errors: Mapping[str, float], tolerance: float) -> Check:
    """Builds a Check from per-tensor errors; NaN counts as the worst possible error."""
    if not errors:
        raise ValueError(f"check {name!r} compared no tensors")
    worst = max(errors, key=lambda k: float("inf") if errors[k] != errors[k] else errors[k])
    return Check(name, float(errors[worst]), tolerance, worst, dict(errors))


def summarize(checks: list[Check]) -> bool:
    """True when every check passed."""
    return all(c.passed for c in checks)
