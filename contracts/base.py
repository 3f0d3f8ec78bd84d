"""What every contract is and returns: the interface of the compliance programs.

A contract is a pure function of a product's verified history (:class:`History`): no clock, no
I/O, no randomness. Temperatures are compared as integer hundredths of a degree and times as
integer milliseconds, so no floating-point rounding or summation order can change a result: the
same history gives the same :meth:`Result.to_bytes`, on any machine, from the database or from an
evidence bundle.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts.history import History
from tracecore.cbor import encode_deterministic

__all__ = ["Contract", "Reason", "Result", "Status", "source_sha256"]


class Status(enum.StrEnum):
    """The outcome of one contract for one product."""

    PASS = "pass"  # noqa: S105 (a status, not a password)
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True, slots=True)
class Reason:
    """One finding, with the log indexes of the entries behind it."""

    text: str
    entries: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    """A contract's verdict on a product, reproducible from the evidence.

    ``measures`` holds the integers a contract reports (degree-minutes in hundredths, longest
    excursion in ms, ...). ``log_size`` is the size of the checkpoint the history was verified
    against.
    """

    contract: str
    version: int
    source_sha256: str
    product: str
    log_size: int
    status: Status
    reasons: tuple[Reason, ...] = ()
    measures: Mapping[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The deterministic CBOR encoding (RFC 8949 §4.2.1) that stored and re-run results
        are compared by."""
        return encode_deterministic(
            {
                "contract": self.contract,
                "version": self.version,
                "source": self.source_sha256,
                "product": self.product,
                "log_size": self.log_size,
                "status": self.status.value,
                "reasons": [[r.text, list(r.entries)] for r in self.reasons],
                "measures": dict(self.measures),
            }
        )


class Contract(Protocol):
    """A compliance program: an id, a version, the product kinds it applies to, ``evaluate``."""

    @property
    def id(self) -> str:
        """The contract's stable name, e.g. ``egg-cold-chain``."""
        ...

    @property
    def version(self) -> int:
        """Raised whenever what the contract decides changes."""
        ...

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of product it judges (contracts.history.KINDS)."""
        ...

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Judge ``history``; return the status, the reasons, and the measures."""
        ...


def source_sha256(contract: object) -> str:
    """SHA-256 (hex) of the source of the module that defines ``contract``.

    A result records it, so anyone can tell whether a re-run used the very same program.
    """
    module = inspect.getmodule(type(contract))
    if module is None or module.__file__ is None:
        raise ValueError(f"cannot find the source of {contract!r}")
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
