"""What each source of a gateway did: counters, the terminal's status lines, Prometheus metrics.

Per source (docs/gateway.md, "What the gateway shows"):

``received``   inputs read (MQTT messages, lines, event rows);
``sent``       signed messages made from them and stored in the outbox;
``receipted``  of those, how many came back with a verified receipt;
``waiting``    sent but not receipted yet (in the outbox);
``rejected``   inputs that could not become a message, by reason (the last one is shown);
``throttled``  sensor messages skipped because one came less than ``min_interval`` before.

The counts are since the gateway started; messages left in the outbox by an earlier run are
shown as the source ``(earlier)``. Rendering is pure: :func:`status_lines` and
:func:`prometheus_text` take a snapshot and return text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["EARLIER", "SourceStatus", "Status", "prometheus_text", "status_lines"]

#: The pseudo-source of messages an earlier run left unreceipted.
EARLIER = "(earlier)"


@dataclass(slots=True)
class SourceStatus:
    """The counters of one source."""

    name: str
    kind: str
    received: int = 0
    sent: int = 0
    receipted: int = 0
    throttled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_rejection: str = ""
    #: For a source on the farm's broker: whether it is connected and subscribed (else None).
    connected: bool | None = None
    #: The source's input waits because the outbox is at its bound.
    waiting_for_room: bool = False

    @property
    def waiting(self) -> int:
        """Messages of this source still without a receipt."""
        return self.sent - self.receipted


@dataclass(slots=True)
class Status:
    """Every source's counters, the outbox and the connection; updated by the running gateway."""

    device: str
    sources: dict[str, SourceStatus] = field(default_factory=dict)
    connected: bool = False
    outbox_pending: int = 0
    resent: int = 0
    rotations: int = 0
    rotating: bool = False
    outbox_full: bool = False
    _owner: dict[tuple[str, int], str] = field(default_factory=dict)

    def add_source(self, name: str, kind: str) -> SourceStatus:
        """Add (or return) the counters of a source."""
        return self.sources.setdefault(name, SourceStatus(name, kind))

    def earlier(self, pending: Iterable[tuple[str, int]]) -> None:
        """Count messages an earlier run left in the outbox under :data:`EARLIER`."""
        source = self.add_source(EARLIER, "outbox")
        for key in pending:
            self._owner[key] = EARLIER
            source.sent += 1

    def sent(self, source: str, device: str, seq: int) -> None:
        """Record that ``source`` made the message ``device``/``seq``."""
        self._owner[(device, seq)] = source
        self.sources[source].sent += 1

    def settled(self, keys: Iterable[tuple[str, int]]) -> None:
        """Record receipts; a key not sent by this run or an earlier one is not counted."""
        for key in keys:
            owner = self._owner.pop(key, None)
            if owner is not None:
                self.sources[owner].receipted += 1

    def rejected(self, source: str, reason: str, detail: str) -> None:
        """Record an input of ``source`` that could not become a message."""
        counters = self.sources[source]
        counters.rejected[reason] += 1
        counters.last_rejection = f"{reason}: {detail}"


def status_lines(status: Status) -> list[str]:
    """Return one line per source, then one for the connection and the outbox."""
    lines = []
    width = max((len(s.name) for s in status.sources.values()), default=0)
    for source in status.sources.values():
        if source.name == EARLIER and not source.waiting:
            continue  # an earlier run's messages, all receipted now: nothing to show
        rejected = sum(source.rejected.values())
        line = (
            f"{source.name:<{width}}  sent {source.sent}  receipted {source.receipted}  "
            f"waiting {source.waiting}  rejected {rejected}"
        )
        if source.throttled:
            line += f"  throttled {source.throttled}"
        if source.connected is False:
            line += "  FARM BROKER UNREACHABLE"
        if source.waiting_for_room:
            line += "  WAITING FOR ROOM IN THE OUTBOX"
        if source.last_rejection:
            line += f"  (last: {_clip(source.last_rejection, 100)})"
        lines.append(line)
    state = "connected" if status.connected else "NOT CONNECTED (messages wait in the outbox)"
    rotating = "; ROTATING THE KEY (inputs wait for its receipt)" if status.rotating else ""
    if status.outbox_full:
        rotating += "; OUTBOX FULL (new readings wait or are dropped)"
    lines.append(
        f"{status.device}: {state}; outbox {status.outbox_pending} waiting, "
        f"{status.resent} resent, {status.rotations} key rotations{rotating}"
    )
    return lines


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(value: str) -> str:
    # Prometheus exposition format: backslash, double quote and newline are escaped in labels.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(status: Status) -> str:
    """Return the gateway's metrics in the Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples: Sequence[tuple[str, int | float]]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value}" for labels, value in samples)

    sources = list(status.sources.values())

    def per(value: str) -> str:
        return f'{{source="{_label(value)}"}}'

    family(
        "agritrace_gateway_inputs_total",
        "counter",
        "Inputs read by a source (MQTT messages, lines, event rows).",
        [(per(s.name), s.received) for s in sources],
    )
    family(
        "agritrace_gateway_sent_total",
        "counter",
        "Signed messages a source stored in the outbox.",
        [(per(s.name), s.sent) for s in sources],
    )
    family(
        "agritrace_gateway_receipted_total",
        "counter",
        "Messages of a source that came back with a verified receipt.",
        [(per(s.name), s.receipted) for s in sources],
    )
    family(
        "agritrace_gateway_waiting",
        "gauge",
        "Messages of a source without a receipt yet.",
        [(per(s.name), s.waiting) for s in sources],
    )
    family(
        "agritrace_gateway_rejected_total",
        "counter",
        "Inputs that could not become a message, by reason.",
        [
            (f'{{source="{_label(s.name)}",reason="{_label(reason)}"}}', count)
            for s in sources
            for reason, count in sorted(s.rejected.items())
        ],
    )
    family(
        "agritrace_gateway_throttled_total",
        "counter",
        "Sensor messages skipped because of the source's min_interval.",
        [(per(s.name), s.throttled) for s in sources],
    )
    family(
        "agritrace_gateway_source_connected",
        "gauge",
        "1 while a source on the farm's broker is connected and subscribed.",
        [(per(s.name), int(bool(s.connected))) for s in sources if s.connected is not None],
    )
    device = f'{{device="{_label(status.device)}"}}'
    family(
        "agritrace_gateway_connected",
        "gauge",
        "1 while the gateway is connected to the broker.",
        [(device, int(status.connected))],
    )
    family(
        "agritrace_gateway_outbox_messages",
        "gauge",
        "Messages in the outbox waiting for a receipt.",
        [(device, status.outbox_pending)],
    )
    family(
        "agritrace_gateway_outbox_full",
        "gauge",
        "1 while the outbox is at its bound (new readings wait or are dropped).",
        [(device, int(status.outbox_full))],
    )
    family(
        "agritrace_gateway_resent_total",
        "counter",
        "Messages published again because no receipt came in time.",
        [(device, status.resent)],
    )
    family(
        "agritrace_gateway_key_rotations_total",
        "counter",
        "Device key rotations completed by this gateway since it started.",
        [(device, status.rotations)],
    )
    return "\n".join(out) + "\n"
