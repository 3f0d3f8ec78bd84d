"""Where ingest spends its CPU: a py-spy profile of the drain, summed by stage.

``python -m bench.ingest --profile FILE`` attaches py-spy (``record --format raw``, idle threads
left out) to its own process for the ingest drain only, then prints this module's table:
for each stage, the samples whose stack falls in it and what they come to in CPU microseconds per
message (samples / sampling rate / messages). The rules are ordered: a stack counts for the first
stage whose marker one of its frames contains (a signature check inside the processor counts as
the signature check, not as the processor). Worker processes (signature checks beside the
sequencer) are sampled too, with ``--subprocesses``.

Run on a saved profile::

    .venv/bin/python -m bench.stages /tmp/ingest.txt --messages 20000 --rate 250
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

__all__ = ["OTHER", "STAGES", "WORKER", "StageTable", "classify", "read_profile", "stage_table"]

#: (stage, markers): a stack belongs to the first stage one of whose markers a frame contains.
STAGES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    # A thread blocked on a pipe to or from a worker process (py-spy cannot always tell a
    # thread blocked in a system call from a running one): time, not CPU, kept apart.
    ("pipe to workers (waiting)", ("multiprocessing/connection.py",)),
    ("Ed25519 verify", ("crypto_sign_open", "_verify_chunk", "verify_batch")),
    ("receipt build + sign", ("sign_receipt", "_sign_chunk", "sign_receipts", "crypto_sign (")),
    ("parse + validate", ("parse_message", "parse_cose", "decode_payload")),
    ("checkpointer", ("checkpoint_once", "make_checkpoint", "run_checkpointer")),
    ("database", ("sqlalchemy/", "sqlite3", "psycopg", "write_transaction")),
    ("processor (Python)", ("Processor.", "_Run.", "ingest/processor.py")),
    (
        "receipt publish",
        (
            "_publish (ingest/service",
            "Client.publish",
            "_send_publish",
            "_update_inflight",
            "_pending_call",
            "publish_many",
            "ingest/mqtt/",
        ),
    ),
    (
        "MQTT receive",
        (
            "_packet_read",
            "_handle_publish",
            "loop_read",
            "_on_message",
            "MessagesIterator",
            "_enqueue",
            "_sock_recv",
            "paho/",
        ),
    ),
    ("ingest service (Python)", ("ingest/service.py",)),
    ("asyncio loop", ("asyncio/", "selectors.py")),
)
OTHER: Final = "other"
#: Prefix of the stages of stacks sampled in worker processes (py-spy --subprocesses).
WORKER: Final = "worker process: "


def classify(frames: Sequence[str]) -> str:
    """Return the stage of one stack (outermost frame first), or ``other``.

    With ``--subprocesses`` py-spy starts each stack with one ``process PID:"command"`` frame
    per process level; a stack of a child process gets the :data:`WORKER` prefix.
    """
    if sum(1 for frame in frames[:3] if frame.startswith("process ")) > 1:
        return WORKER + _stage(frames)
    return _stage(frames)


def _stage(frames: Sequence[str]) -> str:
    for stage, markers in STAGES:
        for frame in frames:
            if any(marker in frame for marker in markers):
                return stage
    return OTHER


def read_profile(lines: Iterable[str]) -> collections.Counter[str]:
    """Sum py-spy's raw (collapsed) output, ``frame;frame;... count`` per line, by stage."""
    samples: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples[classify(stack.split(";"))] += int(count)
    return samples


@dataclass(frozen=True, slots=True)
class StageTable:
    """Samples per stage and their CPU microseconds per message."""

    samples: dict[str, int]
    rate_hz: int
    messages: int
    #: What py-spy sampled: "cpu" (running threads), "gil" (the thread holding the interpreter
    #: lock) or "wall" (every thread, waiting ones too).
    sampling: str = "cpu"

    def us_per_message(self, stage: str) -> float:
        """CPU microseconds per message spent in ``stage``."""
        return self.samples.get(stage, 0) / self.rate_hz / self.messages * 1e6

    @property
    def total_us(self) -> float:
        """CPU microseconds per message, all stages."""
        return sum(self.samples.values()) / self.rate_hz / self.messages * 1e6

    def write(self, out: TextIO) -> None:
        """Print the table, stages in the order of :data:`STAGES`."""
        what = {
            "cpu": "CPU per message by stage (py-spy, {} Hz, idle excluded)",
            "gil": "interpreter lock held per message by stage (py-spy --gil, {} Hz)",
            "wall": "thread time per message by stage, waiting included (py-spy --idle, {} Hz)",
        }[self.sampling].format(self.rate_hz)
        out.write(f"  {what}:\n")
        names = [name for name, _ in STAGES] + [OTHER]
        for stage in names + [WORKER + name for name in names]:
            if self.samples.get(stage):
                out.write(
                    f"    {stage:<40} {self.us_per_message(stage):7.0f} us"
                    f"  ({self.samples[stage]:,} samples)\n"
                )
        main = sum(v for k, v in self.samples.items() if not k.startswith(WORKER))
        out.write(
            f"    {'total, the ingest process':<40} "
            f"{main / self.rate_hz / self.messages * 1e6:7.0f} us\n"
            f"    {'total, with worker processes':<40} {self.total_us:7.0f} us\n"
        )


def stage_table(path: Path, rate_hz: int, messages: int, sampling: str = "cpu") -> StageTable:
    """Read a py-spy raw profile and return its :class:`StageTable`."""
    with path.open(encoding="utf-8") as lines:
        samples = read_profile(lines)
    return StageTable(dict(samples), rate_hz, messages, sampling)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> StageTable:
    """Print the stage table of a saved profile."""
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--rate", type=int, default=250, help="py-spy's sampling rate (Hz)")
    args = parser.parse_args(argv)
    table = stage_table(args.profile, args.rate, args.messages)
    table.write(out)
    return table


if __name__ == "__main__":
    main()
