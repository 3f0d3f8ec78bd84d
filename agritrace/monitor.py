"""``agritrace monitor``: replay a log from its public tiles and check what it claims.

Reads the log of a running service over HTTP, as anyone can (docs/log.md, "Monitoring"):

1. the latest checkpoint, verified against a trust policy (the log key, witnesses, quorum);
2. every entry, from the C2SP tlog-tiles entry bundles under ``/v1/log/tile/entries/``;
3. checks that the entries hash to the checkpoint's root (RFC 9162 §2.1.1), that the log grew
   from the checkpoint kept in ``--state`` (if any: same entries, no rollback, no fork), and
   re-derives every product-index root from the entries (:class:`tracecore.monitor.IndexReplay`).

Exit 0 when every check holds, 1 naming what failed. With ``--state FILE`` the verified
checkpoint is kept for the next run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from tracecore.bundle import Policy, verify_checkpoint
from tracecore.errors import AgritraceError, BundleError
from tracecore.merkle import leaf_hash, root_of
from tracecore.monitor import IndexReplay
from tracecore.note import CheckpointBody, parse_note, verify_note
from tracecore.tiles import decode_entry_bundle, encode_index

__all__ = ["add_monitor_parser", "monitor_log"]

_TILE: Final = 256
_TIMEOUT_S: Final = 30.0


def add_monitor_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agritrace monitor`` to the command line."""
    monitor = commands.add_parser(
        "monitor",
        help="replay a log from its tiles: entries, growth, every product-index root",
        description=(
            "Fetch the log of a running service, verify its checkpoint against a trust policy, "
            "and re-derive from the entries everything the log claims about them."
        ),
    )
    monitor.add_argument("url", help="the service's public URL, e.g. https://trace.example.cn")
    monitor.add_argument(
        "--policy", type=Path, required=True, help="trust policy: log vkey, witnesses, quorum"
    )
    monitor.add_argument(
        "--state",
        type=Path,
        default=None,
        help="keep the verified checkpoint here; the next run checks the log only grew",
    )
    monitor.set_defaults(command=_monitor, offline=True)


def _monitor(args: argparse.Namespace, settings: object) -> int:
    del settings  # like verify: nothing of this installation is trusted or needed
    policy = Policy.parse(args.policy.read_text(encoding="utf-8", errors="replace"))
    previous = None
    if args.state is not None and args.state.exists():
        previous = args.state.read_text(encoding="utf-8", errors="replace")
    with httpx.Client(base_url=args.url.rstrip("/"), timeout=_TIMEOUT_S) as client:
        result = monitor_log(client, policy, previous)
    sys.stdout.write(result.render())
    if result.ok and args.state is not None:
        args.state.write_text(result.checkpoint, encoding="utf-8")
    return 0 if result.ok else 1


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """What one monitoring run found: the checkpoint and each named check."""

    checkpoint: str
    size: int
    checks: tuple[tuple[str, bool, str], ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(ok for _, ok, _ in self.checks)

    def render(self) -> str:
        """The result as text, a line a check, then MONITOR OK or MONITOR FAILED: names."""
        lines = [f"log at size {self.size}"]
        lines += [
            f"{'ok  ' if ok else 'FAIL'} {name:<10} {detail}" for name, ok, detail in self.checks
        ]
        failed = [name for name, ok, _ in self.checks if not ok]
        lines.append("MONITOR OK" if not failed else f"MONITOR FAILED: {', '.join(failed)}")
        return "\n".join(lines) + "\n"


def monitor_log(client: httpx.Client, policy: Policy, previous: str | None = None) -> MonitorResult:
    """Monitor the log served at ``client``'s base URL; ``previous`` is a checkpoint kept earlier.

    Raises :class:`AgritraceError` when the checkpoint does not verify or the log cannot be
    read (nothing else can be checked then).
    """
    text = _get(client, "/v1/log/checkpoint").decode("utf-8", errors="replace")
    body, cosigners = verify_checkpoint(text, policy)
    checks: list[tuple[str, bool, str]] = [
        ("checkpoint", True, f"signed by {policy.log.name}, {len(cosigners)} cosignature(s)")
    ]
    replay = IndexReplay()
    leaves: list[bytes] = []
    for start in range(0, body.size, _TILE):
        width = min(_TILE, body.size - start)
        path = f"/v1/log/tile/entries/{encode_index(start // _TILE)}"
        entries = decode_entry_bundle(_get(client, path + (f".p/{width}" if width < _TILE else "")))
        if len(entries) != width:
            raise BundleError(f"the entry bundle {path} holds {len(entries)} entries, not {width}")
        for offset, entry in enumerate(entries):
            leaves.append(leaf_hash(entry))
            replay.feed(start + offset, entry)
    root = root_of(leaves)
    checks.append(
        (
            "entries",
            root == body.root_hash,
            f"{body.size} entries hash to the checkpoint root"
            if root == body.root_hash
            else f"the {body.size} entries served do not hash to the checkpoint root",
        )
    )
    if previous is not None:
        checks.append(("growth", *_growth(previous, policy, body, leaves)))
    failed = [check for check in replay.roots if not check.ok]
    if failed:
        first = failed[0]
        detail = f"{len(failed)} of {len(replay.roots)} wrong; entry {first.index}: {first.detail}"
    elif replay.roots:
        last = replay.roots[-1]
        detail = (
            f"{len(replay.roots)} root(s) re-derived from the entries, the last at entry "
            f"{last.index} (size {last.size})"
        )
    else:
        detail = "the log holds no index root yet"
    checks.append(("index", not failed, detail))
    unparsed = [p for p in replay.problems if "does not parse" in p]
    if unparsed:
        checks.append(("parse", False, f"{len(unparsed)} entries do not parse; {unparsed[0]}"))
    return MonitorResult(text, body.size, tuple(checks))


def _growth(
    previous: str, policy: Policy, body: CheckpointBody, leaves: list[bytes]
) -> tuple[bool, str]:
    """Whether the log now served extends the checkpoint kept from an earlier run."""
    try:
        note = parse_note(previous)
        verify_note(note, [policy.log])
        old = CheckpointBody.parse(note.text)
    except AgritraceError as exc:
        return False, f"the kept checkpoint does not verify: {exc}"
    if old.size > body.size:
        return False, f"the log shrank from {old.size} to {body.size}: rollback"
    if root_of(leaves[: old.size]) != old.root_hash:
        return False, f"the first {old.size} entries changed since the kept checkpoint: fork"
    return True, f"the log at {body.size} extends the one kept at {old.size}"


def _get(client: httpx.Client, path: str) -> bytes:
    try:
        reply = client.get(path)
    except httpx.HTTPError as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    if reply.status_code != 200:
        raise BundleError(f"{path} answered {reply.status_code}")
    return reply.content
