#!/usr/bin/env python3
"""End-to-end check of the compose stack, from outside, as an operator would see it.

Run by ``scripts/compose-test.sh`` once the stack it started is healthy (docs/deployment.md,
"Checking the stack end to end"). Standard library only: it runs on the host, talks to the
stack through its published port and ``docker-compose``, and verifies evidence with the
``agritrace`` image in a container that has no network at all.

In order, each step timed and printed:

1. The simulator's readings are committed: the log's device messages, counted by PostgreSQL,
   grow.
2. A scan of a simulated product through port 8000 answers ``verified``, with both witnesses'
   cosignatures on the checkpoint.
3. ``restart`` of one ingest worker, then of mosquitto, while the simulator runs.
4. The scanned product's evidence bundle, downloaded from the stack, verifies offline with
   ``agritrace verify`` against a policy written from the keys ``init`` made (quorum 2).
5. The simulator ends with every message it sent receipted (it exits non-zero otherwise), and
   the log holds exactly as many device messages as it had receipts: nothing was lost or
   committed twice across the restarts.
6. ``down`` and ``up`` again (volumes kept): the log is still there, and a new bundle proves
   the log only grew since the checkpoint seen before ``down`` (``--previous``).

The simulator must still be running at step 3: compose-test gives it a few minutes
(``SIM_DURATION``), and step 3 comes seconds after the first readings. Exits 0 when every step
holds; otherwise prints what did not, the services' last log lines, and exits 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Services that run until stopped, and the one-shot ones, as compose.yaml names them.
LONG_RUNNING = (
    "postgres",
    "mosquitto",
    "ingest-1",
    "ingest-2",
    "traceapi",
    "witness-1",
    "witness-2",
)
ONE_SHOT = ("init",)


class CheckFailed(Exception):
    """A step of the check did not hold."""


class StackBroken(CheckFailed):
    """Something happened that no amount of waiting mends (init failed): fail at once."""


class Stack:
    """The compose project under test: ``docker-compose`` with its files, and the API's URL."""

    def __init__(self, compose: Sequence[str], api: str, admin_token: str, image: str) -> None:
        self.compose = list(compose)
        self.api = api.rstrip("/")
        self.admin_token = admin_token
        self.image = image

    # -- docker-compose ------------------------------------------------------------------------

    def run(self, *args: str, check: bool = True) -> str:
        """Run ``docker-compose ARGS``; return its standard output."""
        done = subprocess.run(  # noqa: S603  (our own command line)
            [*self.compose, *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise CheckFailed(
                f"{shlex.join([*self.compose, *args])} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def container(self, service: str) -> str | None:
        """The id of the service's container, or None when it has none."""
        ids = self.run("ps", "-q", service, check=False).split()
        return ids[0] if ids else None

    def state(self, service: str) -> dict[str, Any]:
        """``docker inspect``'s State of the service's container (empty when it has none)."""
        container = self.container(service)
        if container is None:
            return {}
        out = subprocess.run(  # noqa: S603
            ["docker", "inspect", "--format", "{{json .State}}", container],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return dict(json.loads(out)) if out.strip() else {}

    def exec_text(self, service: str, *command: str) -> str:
        """Standard output of ``command`` in the service's running container."""
        return self.run("exec", "-T", service, *command)

    def wait_healthy(self, services: Sequence[str], within_s: float) -> None:
        """Wait until each service is healthy (or running, without a health check) and init
        has exited 0."""
        pending: list[str] = []

        def all_ready() -> bool:
            pending[:] = self.not_ready(services)
            return not pending

        if not wait_until(all_ready, within_s, every_s=2.0):
            raise CheckFailed(f"not healthy after {within_s:.0f} s: {', '.join(pending)}")

    def not_ready(self, services: Sequence[str]) -> list[str]:
        """The services not ready yet, each with its state; raises StackBroken when init failed."""
        waiting = []
        for service in ONE_SHOT:
            state = self.state(service)
            if state.get("Status") == "exited" and state.get("ExitCode") != 0:
                raise StackBroken(
                    f"{service} exited {state.get('ExitCode')}:\n" + self.logs(service)
                )
            if state.get("Status") != "exited":
                waiting.append(service)
        for service in services:
            state = self.state(service)
            health = state.get("Health", {}).get("Status")
            if state.get("Status") != "running" or health not in (None, "healthy"):
                waiting.append(f"{service} ({health or state.get('Status', 'no container')})")
        return waiting

    def logs(self, service: str, tail: int = 40) -> str:
        """The last lines the service printed."""
        return self.run("logs", "--no-color", "--tail", str(tail), service, check=False)

    # -- HTTP ----------------------------------------------------------------------------------

    def get(self, path: str, *, admin: bool = False, accept: str = "application/json") -> bytes:
        """GET ``path`` from the API; the body (raises CheckFailed on an HTTP error)."""
        request = urllib.request.Request(self.api + path, headers={"Accept": accept})  # noqa: S310
        if admin:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise CheckFailed(f"GET {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise CheckFailed(f"GET {path}: {exc}") from exc

    def metric(self, name: str) -> float:
        """One unlabelled value of ``GET /metrics``."""
        for line in self.get("/metrics", accept="text/plain").decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise CheckFailed(f"/metrics has no {name}")

    def device_messages(self) -> int:
        """Device messages in the log, counted by PostgreSQL itself."""
        out = self.exec_text(
            "postgres",
            "psql", "-U", "agritrace", "-d", "agritrace", "-tAc",
            "SELECT count(*) FROM log_entries WHERE kind = 'device_message'",
        )  # fmt: skip
        return int(out.strip())


def wait_until(condition: Callable[[], bool], within_s: float, every_s: float = 1.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``within_s`` has passed (False).

    A deadline for failing, not a measurement: on a loaded machine everything only takes
    longer, and the check waits for it.
    """
    deadline = time.monotonic() + within_s
    while True:
        if _holds(condition):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)


def _holds(condition: Callable[[], bool]) -> bool:
    """``condition()``; False while a service still starting answers with an error."""
    try:
        return condition()
    except StackBroken:
        raise
    except CheckFailed:
        return False


def policy_text(log_vkey: str, witnesses_setting: str, quorum: int) -> str:
    """A trust policy (docs/bundle.md) from init's ``/config/log.vkey`` and ``/config/witnesses``.

    ``witnesses_setting`` is ``AGRITRACE_WITNESSES``: space-separated ``URL=VKEY`` items.
    """
    lines = [f"log {log_vkey.strip()}"]
    for item in witnesses_setting.split():
        url, sep, vkey = item.partition("=")
        if not sep:
            raise CheckFailed(f"not URL=VKEY in /config/witnesses: {item!r}")
        label = url.split("//", 1)[-1].split(":", 1)[0]
        lines.append(f"witness {label} {vkey}")
    lines.append(f"quorum {quorum}")
    return "\n".join(lines) + "\n"


class Report:
    """Prints each step with its time since the start."""

    def __init__(self, up_at: float | None = None) -> None:
        # Steps are timed on the monotonic clock, from `up` when its wall time is given.
        self.started = time.monotonic() - (0.0 if up_at is None else max(0.0, time.time() - up_at))
        self.times: dict[str, float] = {}

    def step(self, name: str, run: Callable[[], T]) -> T:
        """Run one step; print and keep how long after the start it finished."""
        print(f"== {name} ...", flush=True)
        began = time.monotonic()
        value = run()
        now = time.monotonic()
        self.times[name] = now - self.started
        print(f"   ok in {now - began:.1f} s ({now - self.started:.1f} s after up)", flush=True)
        return value


def first_verified(stack: Stack, within_s: float) -> dict[str, Any]:
    """Scan the simulator's products until one answers verified; return that answer."""
    found: dict[str, Any] = {}
    seen: list[str] = []

    def scan_some() -> bool:
        rows = json.loads(stack.get("/v1/products?limit=50", admin=True))
        for row in rows:
            answer = json.loads(stack.get("/" + row["key"]))
            seen.append(f"{row['key']}: {answer['verdict']}")
            if answer["verdict"] == "verified":
                found.update(answer)
                return True
        return False

    if not wait_until(scan_some, within_s, every_s=3.0):
        raise CheckFailed("no product answered verified; last answers:\n" + "\n".join(seen[-10:]))
    return found


def cosigners(note: str, names: Sequence[str]) -> list[str]:
    """The names among ``names`` that signed the checkpoint note (signature lines)."""
    signed = {line.split()[1] for line in note.splitlines() if line.startswith("\u2014 ")}
    return [name for name in names if name in signed]


def verify_offline(
    stack: Stack, workdir: Path, bundle_url: str, policy: str, previous: str | None
) -> str:
    """Download the bundle; run ``agritrace verify`` in a container without a network."""
    # The answer's URL is built on AGRITRACE_PUBLIC_URL; fetch its path from the published port.
    parts = urllib.parse.urlsplit(bundle_url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if previous is not None:
        size = previous.splitlines()[1]
        path += ("&" if "?" in path else "?") + f"previous={size}"
        (workdir / "previous.txt").write_text(previous)
    (workdir / "bundle.json").write_bytes(stack.get(path))
    (workdir / "policy.txt").write_text(policy)
    command = [
        "docker", "run", "--rm", "--network", "none",
        "-v", f"{workdir}:/check:ro", stack.image,
        "verify", "/check/bundle.json", "--policy", "/check/policy.txt",
        *(["--previous", "/check/previous.txt"] if previous is not None else []),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise CheckFailed(
            f"agritrace verify failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--compose",
        default="docker-compose -f compose.yaml -f deploy/compose.local.yaml",
        help="the docker-compose command line, with its files and project",
    )
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--image", default="agritrace:latest", help="the agritrace image")
    parser.add_argument("--within", type=float, default=600, help="seconds before a step fails")
    parser.add_argument(
        "--up-at",
        type=float,
        default=None,
        help="the Unix time `up` started, so that steps are timed from it (default: now)",
    )
    args = parser.parse_args(argv)
    token = os.environ.get("AGRITRACE_ADMIN_TOKEN", "")
    if not token:
        parser.error("set AGRITRACE_ADMIN_TOKEN (compose.yaml needs it too)")
    stack = Stack(shlex.split(args.compose), args.api, token, args.image)
    report = Report(args.up_at)
    try:
        run_checks(stack, report, args.within)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        for service in (*LONG_RUNNING, "simulator", *ONE_SHOT):
            print(f"--- {service}\n{stack.logs(service)}", file=sys.stderr)
        return 1
    print("\nseconds after `up`: " + ", ".join(f"{k} {v:.0f}" for k, v in report.times.items()))
    return 0


def run_checks(stack: Stack, report: Report, within: float) -> None:
    """The steps of the module docstring, in order."""
    already = stack.device_messages()

    def readings_committed() -> None:
        if not wait_until(lambda: stack.device_messages() > already, within, every_s=2.0):
            raise CheckFailed("no device message reached the log")

    report.step("readings committed", readings_committed)
    answer = report.step("first verified scan", lambda: first_verified(stack, within))
    restarts(stack, report, within)
    names = ["gansu-witness-1", "gansu-witness-2"]
    signed = cosigners(answer["checkpoint"]["note"], names)
    if signed != names:
        raise CheckFailed(f"the checkpoint is cosigned by {signed}, not by both witnesses")
    # The scan's own check counts the cosignatures that verify under the witnesses it trusts.
    (witnessed,) = [c for c in answer["checks"] if c["name"] == "witnesses"]
    if not (witnessed["ok"] and witnessed["detail"].startswith("2 trusted cosignature")):
        raise CheckFailed(f"the scan's witness check: {witnessed}")
    print(
        f"   {answer['product']['key']}: verified, checkpoint of {answer['checkpoint']['size']} "
        f"entries cosigned by {', '.join(signed)} ({witnessed['detail']})"
    )
    policy = policy_text(
        stack.exec_text("traceapi", "cat", "/config/log.vkey"),
        stack.exec_text("traceapi", "cat", "/config/witnesses"),
        quorum=2,
    )
    with tempfile.TemporaryDirectory(prefix="compose-check-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the image's user reads the files
        output = report.step(
            "bundle verified offline",
            lambda: verify_offline(stack, workdir, answer["bundle_url"], policy, None),
        )
        print("   " + output.strip().replace("\n", "\n   "))
        counts(stack, report, within)
        before = stack.get("/v1/log/checkpoint", accept="text/plain").decode()
        size_before = int(before.splitlines()[1])
        report.step("down (volumes kept)", lambda: stack.run("down"))
        report.step("up again", lambda: stack.run("up", "-d", "--no-build", *LONG_RUNNING))
        report.step("healthy again", lambda: stack.wait_healthy(LONG_RUNNING, within))
        after = json.loads(stack.get("/" + answer["product"]["key"]))
        size_after = after["checkpoint"]["size"]
        if size_after < size_before:
            raise CheckFailed(f"the log shrank across down/up: {size_before} -> {size_after}")
        output = report.step(
            "the log only grew across down/up",
            lambda: verify_offline(stack, workdir, after["bundle_url"], policy, before),
        )
        print(f"   checkpoint {size_before} before down, {size_after} after up")
        print("   " + output.strip().replace("\n", "\n   "))


def restarts(stack: Stack, report: Report, within: float) -> None:
    """Restart one ingest worker, then mosquitto, while the simulator sends."""
    if stack.state("simulator").get("Status") != "running":
        raise CheckFailed(
            "the simulator has already stopped: nothing would cross the restarts "
            "(a machine this slow needs a longer SIM_DURATION)"
        )
    report.step("restart ingest-1", lambda: stack.run("restart", "ingest-1"))
    report.step("restart mosquitto", lambda: stack.run("restart", "mosquitto"))
    report.step("healthy after restarts", lambda: stack.wait_healthy(LONG_RUNNING, within))


def counts(stack: Stack, report: Report, within: float) -> None:
    """Wait for the simulator's end; every message it sent is receipted and logged once."""

    def simulator_done() -> dict[str, Any]:
        if not wait_until(lambda: stack.state("simulator").get("Status") == "exited", within, 3.0):
            raise CheckFailed("the simulator did not finish")
        return stack.state("simulator")

    state = report.step("simulator finished", simulator_done)
    summary = [line for line in stack.logs("simulator", 400).splitlines() if "receipted" in line]
    print("   " + (summary[-1].strip() if summary else "(no summary line)"))
    if state.get("ExitCode") != 0:
        raise CheckFailed(
            f"the simulator exited {state.get('ExitCode')}: a message it sent was not receipted"
        )
    receipted = _receipted(summary[-1] if summary else "")
    logged = stack.device_messages()
    print(f"   simulator receipted {receipted}, the log holds {logged} device messages")
    if receipted != logged:
        raise CheckFailed(f"the simulator had {receipted} receipts, the log {logged} messages")


def _receipted(summary: str) -> int:
    """The receipted count of the simulator's summary line ("N/M messages sent, R receipted")."""
    words = summary.replace(",", " ").split()
    for before, word in itertools.pairwise(words):
        if word == "receipted" and before.isdigit():
            return int(before)
    raise CheckFailed(f"no receipted count in the simulator's summary: {summary!r}")


if __name__ == "__main__":
    sys.exit(main())
