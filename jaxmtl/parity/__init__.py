"""The parity harness: the one part of jaxmtl that talks to torch (imported lazily)."""

from jaxmtl.parity.checks import Check, check_from_errs, summarize
from jaxmtl.parity.precision import TOLERANCES, set_full_precision

__all__ = ["Check", "check_from_errs", "summarize", "TOLERANCES", "set_full_precision"]
