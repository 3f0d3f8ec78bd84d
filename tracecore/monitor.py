"""Monitoring the log: replay every entry, re-derive every product-index root, compare.

A witness checks that the log only grows; it does not read the entries. A *monitor* does: it
replays the log from its first entry and recomputes, from the entries alone, everything the log
claims about them. Here that is the product index (docs/log.md, "The product index"): at each
``index_root`` entry it folds the entries ``[0, size)`` into the map
(:class:`tracecore.indexstate.IndexChanges`, :class:`tracecore.smt.MemoryTree`) and compares the
root with the one the entry states. A log operator who wrote a root that hides a recall or a
chain head from bundles is caught by the first monitor that replays the log.

:class:`IndexReplay` is pure: it takes entries in log order and says, for each root entry,
whether it matches. The command ``agritrace monitor`` (agritrace/monitor.py) feeds it from the
log's C2SP tlog-tiles entry bundles after verifying the checkpoint, and also checks that the
entries hash to the checkpoint's root.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from tracecore import smt
from tracecore.errors import AgritraceError
from tracecore.indexstate import IndexChanges, IndexValue
from tracecore.logentry import AnyEntry, IndexRoot, parse_any_entry

__all__ = ["IndexReplay", "RootCheck"]


@dataclass(frozen=True, slots=True)
class RootCheck:
    """The outcome for one ``index_root`` entry."""

    index: int
    size: int
    ok: bool
    detail: str


@dataclass
class IndexReplay:
    """Replays log entries in index order and checks every ``index_root`` entry.

    Feed every entry from index 0 with :meth:`feed`; it returns a :class:`RootCheck` for each
    root entry (None for the others). :attr:`problems` collects entries that do not parse
    (they change no key, as in the service) and roots that fail.
    """

    tree: smt.MemoryTree = field(default_factory=smt.MemoryTree)
    values: dict[bytes, IndexValue] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    roots: list[RootCheck] = field(default_factory=list)
    #: Entries fed so far (the next index expected).
    fed: int = 0
    #: Entries folded into :attr:`tree` (the map is of the log's first ``folded`` entries).
    folded: int = 0
    _waiting: list[tuple[int, AnyEntry, bytes]] = field(default_factory=list)

    def feed(self, index: int, data: bytes) -> RootCheck | None:
        """Take the entry at ``index`` (the next one); check it if it is an index root."""
        if index != self.fed:
            raise ValueError(f"entries must be fed in order: expected {self.fed}, got {index}")
        self.fed += 1
        try:
            entry = parse_any_entry(data)
        except AgritraceError as exc:
            self.problems.append(f"entry {index} does not parse: {exc}")
            return None
        self._waiting.append((index, entry, data))
        if not isinstance(entry, IndexRoot):
            return None
        check = self._check_root(index, entry)
        self.roots.append(check)
        if not check.ok:
            self.problems.append(f"index root at entry {index}: {check.detail}")
        return check

    def _check_root(self, index: int, root: IndexRoot) -> RootCheck:
        if root.size > index:
            return RootCheck(index, root.size, False, f"claims size {root.size}, beyond itself")
        if root.size < self.folded:
            return RootCheck(
                index, root.size, False, f"size {root.size} is below an earlier root's"
            )
        self._fold_to(root.size)
        if self.tree.root != root.root:
            return RootCheck(
                index,
                root.size,
                False,
                f"the log's first {root.size} entries give the index root "
                f"{_b64(self.tree.root)}, the entry states {_b64(root.root)}",
            )
        return RootCheck(index, root.size, True, f"matches the first {root.size} entries")

    def _fold_to(self, size: int) -> None:
        changes = IndexChanges(self.values.get)
        keep = []
        for index, entry, data in self._waiting:
            if index < size:
                changes.apply(index, entry, data)
            else:
                keep.append((index, entry, data))
        self._waiting = keep
        self.values.update(changes.values)
        self.tree.apply(changes.value_hashes())
        self.folded = size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
