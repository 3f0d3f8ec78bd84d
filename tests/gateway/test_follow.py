"""Following a file like ``tail -F``: appended lines, an over-long line, log rotation, a cut."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.sources import MAX_LINE, _follow_file


class _Seen:
    def __init__(self) -> None:
        self.lines: list[bytes | None] = []
        self.cursors: list[str] = []

    async def __call__(
        self, line: bytes | None, number: int, cursor: tuple[str, str] | None
    ) -> None:
        assert cursor is not None
        assert number == len(self.lines) + 1 or cursor[1].split(":")[2] == str(number)
        self.lines.append(line)
        self.cursors.append(cursor[1])


async def _follow(
    path: Path, seen: _Seen, steps: list[tuple[str, object]], start: str | None
) -> None:
    stop = asyncio.Event()

    async def drive() -> None:
        for action, value in steps:
            if action == "append":
                with path.open("ab") as handle:
                    handle.write(value)  # type: ignore[arg-type]
            elif action == "rotate":
                path.rename(path.with_suffix(".1"))  # noqa: ASYNC240
                path.write_bytes(value)  # type: ignore[arg-type]  # noqa: ASYNC240
            elif action == "truncate":
                with path.open("r+b") as handle:
                    handle.truncate(0)
                    handle.write(value)  # type: ignore[arg-type]
            elif action == "wait":
                count = int(value)  # type: ignore[call-overload]
                async with asyncio.timeout(60):
                    while len(seen.lines) < count:  # noqa: ASYNC110 (polls the follower)
                        await asyncio.sleep(0.05)
        stop.set()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_follow_file(path, "lines:t", stop, seen, lambda _: start), name="follow")
        tasks.create_task(drive(), name="drive")


def test_appends_long_lines_rotation_and_cuts(tmp_path: Path) -> None:
    """Every complete line once, in order; an over-long line is one refusal, then the next."""
    path = tmp_path / "probe.csv"
    path.write_bytes(b"a\n")
    seen = _Seen()
    steps: list[tuple[str, object]] = [
        ("wait", 1),
        ("append", b"b\npart"),
        ("wait", 2),
        ("append", b"ial\n" + b"x" * (MAX_LINE + 10) + b"\nc\n"),
        ("wait", 5),
        ("rotate", b"new-1\n"),
        ("wait", 6),
        ("truncate", b"z\n"),  # shorter than what was read: seen as a cut
        ("wait", 7),
    ]
    asyncio.run(_follow(path, seen, steps, None))
    assert seen.lines == [b"a\n", b"b\n", b"partial\n", None, b"c\n", b"new-1\n", b"z\n"]
    inode = path.stat().st_ino
    assert seen.cursors[-1] == f"{inode}:2:1"


def test_a_committed_cursor_resumes_after_its_line(tmp_path: Path) -> None:
    """With the cursor of line 2 committed, the next run starts at line 3 of the same file."""
    path = tmp_path / "probe.csv"
    path.write_bytes(b"one\ntwo\nthree\n")
    inode = path.stat().st_ino
    seen = _Seen()
    asyncio.run(_follow(path, seen, [("wait", 1)], f"{inode}:8:2"))
    assert seen.lines == [b"three\n"]
    assert seen.cursors == [f"{inode}:14:3"]
