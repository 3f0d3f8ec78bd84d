"""settle_garbage_collector exempts start-up objects and collects less often, still collecting."""

from __future__ import annotations

import subprocess
import sys


def test_settling_freezes_start_up_objects_and_still_collects_cycles() -> None:
    """In a fresh process: objects frozen, young threshold raised, a cycle still freed."""
    script = """
import gc, weakref
from ingest import settle_garbage_collector
from ingest.service import GC_YOUNG_THRESHOLD
settle_garbage_collector()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
gc.collect()
assert gone() is None
print("ok")
"""
    done = subprocess.run(  # noqa: S603  (this interpreter, a fixed script)
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
