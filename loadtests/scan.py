"""Scan traffic for locust: buyers scanning QR codes, and /healthz as the baseline.

The users are locust's ``FastHttpUser`` (geventhttpclient): on a machine that runs the API and
locust together, the load generator's own cost per request is then a small share of the cores.

Run headless against a running API (``agritrace api``), naming the user class::

    locust -f loadtests/scan.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8000 \\
        JsonScanUser

Product keys come from ``AGRITRACE_LOAD_KEYS`` (comma-separated Digital Link paths; the first
is the one ``JsonScanUser`` scans). User classes:

``JsonScanUser``
    JSON scans (``Accept: application/json``) of one product, a buyer's app reading the answer
    and pausing ``AGRITRACE_LOAD_WAIT`` seconds (``a,b``: uniform between; ``0``: none).
``PageScanUser``
    the product page (HTML, Chinese) of the same product, as a phone's browser opens it, with
    the same pacing.
``MixedScanUser``
    what a crowd of buyers does: known keys as HTML and JSON, unknown keys (404), QR images.
``HealthUser``
    ``GET /healthz`` with the same pacing: the cost of a request that does nothing.
"""

from __future__ import annotations

import os
import random
from typing import Final

from locust import FastHttpUser, between, constant, task

__all__ = ["HealthUser", "JsonScanUser", "MixedScanUser", "PageScanUser"]

KEYS: Final = [k for k in os.environ.get("AGRITRACE_LOAD_KEYS", "").split(",") if k]
_JSON: Final = {"Accept": "application/json"}


def _wait() -> object:
    text = os.environ.get("AGRITRACE_LOAD_WAIT", "0.5,1.5")
    low, _, high = text.partition(",")
    if not high:
        return constant(float(low))
    return between(float(low), float(high))


def _key() -> str:
    if not KEYS:
        raise RuntimeError("set AGRITRACE_LOAD_KEYS to the product keys to scan")
    return KEYS[0]


class JsonScanUser(FastHttpUser):
    """Scans one product and reads the JSON answer."""

    wait_time = _wait()

    @task
    def scan_json(self) -> None:
        """GET /{key} as JSON; anything but 200 verified counts as a failure."""
        with self.client.get(
            f"/{_key()}", headers=_JSON, name="/{key} json", catch_response=True
        ) as response:
            if response.status_code != 200 or '"verdict":"verified"' not in response.text:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class PageScanUser(FastHttpUser):
    """Opens one product's page in Chinese, as a phone's browser does after a scan."""

    wait_time = _wait()

    @task
    def scan_page(self) -> None:
        """GET /{key} as HTML; anything but a 200 verified page counts as a failure."""
        headers = {"Accept": "text/html", "Accept-Language": "zh-CN"}
        with self.client.get(
            f"/{_key()}", headers=headers, name="/{key} html", catch_response=True
        ) as response:
            if response.status_code != 200 or 'data-verdict="verified"' not in response.text:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class MixedScanUser(FastHttpUser):
    """Known and unknown codes, HTML and JSON, and the QR image of a product."""

    wait_time = _wait()

    @task(6)
    def scan_html(self) -> None:
        """A phone's browser opening the page."""
        self.client.get(f"/{random.choice(KEYS or [_key()])}", name="/{key} html")  # noqa: S311

    @task(3)
    def scan_json(self) -> None:
        """An app asking for JSON."""
        key = random.choice(KEYS or [_key()])  # noqa: S311 (load generation, not security)
        self.client.get(f"/{key}", headers=_JSON, name="/{key} json")

    @task(1)
    def scan_unknown(self) -> None:
        """A code nobody registered: 404 is the right answer."""
        lot = f"X{random.randrange(10**9)}"  # noqa: S311
        with self.client.get(
            f"/01/06901234567892/10/{lot}", headers=_JSON, name="/{unknown}", catch_response=True
        ) as response:
            if response.status_code == 404:
                response.success()

    @task(1)
    def qr(self) -> None:
        """The QR image a label printer fetches."""
        self.client.get(f"/qr/{random.choice(KEYS or [_key()])}.png", name="/qr/{key}.png")  # noqa: S311


class HealthUser(FastHttpUser):
    """The baseline: a request that only asks the database for SELECT 1."""

    wait_time = _wait()

    @task
    def healthz(self) -> None:
        """GET /healthz."""
        self.client.get("/healthz", name="/healthz")
