"""``agritrace demo``: the whole system on one machine, with embedded defaults.

One process runs what a province would run on several machines: the embedded amqtt broker,
ingest with its checkpointer, the trace API on SQLite, and one witness. A Gansu laying-hen farm
and its device gateways are registered through the real HTTP API; the gateways (the firmware
runtime of ``firmware_sim``) sign an egg lot's commissioning, hen-house temperatures and the
packing of cartons, publish them over MQTT, and keep each message until a receipt signed by the
log key comes back. A tampered copy is published too and lands in the rejections. Once a
witness has cosigned a checkpoint, the demo downloads a carton's evidence bundle and verifies it
offline against a trust policy, exactly as ``agritrace verify`` does.

Links and QR codes it prints use ``settings.public_url``: the CLI sets it to the address the API
binds unless ``AGRITRACE_PUBLIC_URL`` is configured (agritrace/address.py). The demo itself talks
to the API at the bound address, whatever the public one is.

A second run reuses the data directory: keys, parties and devices are found again, sequence
numbers keep counting up, the log keeps growing, and every run adds a new lot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyqrcode
from pydantic import SecretStr
from sqlalchemy import Engine

from agritrace.address import local_url
from agritrace.demo_farm import PROBE_TOPIC, DemoFarm
from agritrace.runner import (
    configure_logging,
    quiet_server,
    run_service,
    serve_until_stopped,
)
from firmware_sim.sim import SimOptions, run_simulation
from gateway.runtime import load_or_create_device_key
from tracecore.bundle import Policy, parse_bundle, verify_bundle
from tracecore.errors import ConfigError
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, VerifierKey, load_or_create_log_key
from tracecore.mqtt import DEFAULT_EMBEDDED, BrokerAddress
from tracecore.note import cosigner_verifier, parse_note
from tracecore.settings import Settings
from witness import create_app as create_witness_app
from witness import open_witness

__all__ = ["run_demo"]

# A GTIN-13 of the GS1 China prefix range 690 to 699, with its check digit (GS1 GenSpecs §7.9.1).
EGG_GTIN = "06901234567892"
WITNESS_NAME = "demo-witness"
SETTLE_SECONDS = 60
INSPECTOR = "gansu-amr"
# Each scenario runs for SCENARIO_SECONDS of wall time at (name, speed, share of too-warm
# cold-chain readings): eggs go from hen house to shop in 60 scenario hours, cattle and sheep
# from farm to cuts in 72; the demo still shows its pages within a minute. Half the beef
# chiller readings are too warm, so some carcass fails its chilled-meat contract. (Device times
# are compressed by the speed, docs/scenarios.md: rules about hours, such as eggs cold 36 h
# after laying, need a run at --speed 1 to bite.)
SCENARIO_SECONDS = 8.0
SCENARIOS = (("egg", 27_000, 0.0), ("beef", 32_400, 0.5))


@dataclass(frozen=True, slots=True)
class _Party:
    id: str
    name: str
    kind: str
    name_en: str
    place: str
    place_en: str
    licence: str

    def body(self) -> dict[str, str]:
        """The body of ``POST /v1/parties``: id, kind, name and public profile."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "name_en": self.name_en,
            "place": self.place,
            "place_en": self.place_en,
            "licence": self.licence,
        }


PARTIES = (
    _Party(
        "gansu-hens-01",
        "临夏蛋鸡养殖场",
        "farm",
        "Linxia laying-hen farm",
        "甘肃省临夏州临夏县",
        "Linxia County, Gansu",
        "SIM-FARM-0001",
    ),
    _Party(
        "lanzhou-pack",
        "兰州禽蛋包装厂",
        "packer",
        "Lanzhou egg packing plant",
        "甘肃省兰州市",
        "Lanzhou, Gansu",
        "SIM-PACKER-0002",
    ),
)
#: Where the demo's two devices stand (chart legends and pages).
DEVICE_PLACES = {
    "hens01-collect": ("集蛋线", "egg collection line"),
    "hens01-house1-climate": ("1号鸡舍", "hen house 1"),
}
FARM = PARTIES[0].id
CLIMATE = "hens01-house1-climate"
COLLECT = "hens01-collect"


def run_demo(settings: Settings, *, host: str, port: int, serve: bool) -> int:
    """Run the demo: services, registration, signed traffic, receipts, a verified bundle.

    With ``serve`` everything keeps running until Ctrl-C (SIGINT) or SIGTERM; otherwise the
    demo stops after the walkthrough. Returns the process exit status.
    """
    configure_logging(logging.WARNING)  # the walkthrough speaks on stdout; problems on stderr
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_port_free(host, port)
    log_key, _ = load_or_create_log_key(settings.keys_dir, settings.log_origin)
    witness_port = _free_port(host, 8100)
    witness = open_witness(
        settings.keys_dir,
        WITNESS_NAME,
        [(settings.log_origin, log_key.verifier)],
        settings.data_dir / f"witness-{WITNESS_NAME}.db",
    )
    witness_url = local_url(host, witness_port)
    settings = settings.model_copy(
        update={
            "admin_token": _admin_token(settings),
            "witnesses": f"{witness_url}={cosigner_verifier(witness.key)}",
        }
    )
    embedded = BrokerAddress(DEFAULT_EMBEDDED.host, _free_port(DEFAULT_EMBEDDED.host, 1883))
    broker = BrokerAddress.parse(settings.mqtt_url) if settings.mqtt_url else embedded
    walkthrough = _Walkthrough(settings, broker, local_url(host, port), serve=serve)

    async def witness_server(engine: Engine, stop: asyncio.Event) -> None:
        del engine
        await serve_until_stopped(
            quiet_server(create_witness_app(witness), host, witness_port), stop
        )

    return run_service(
        settings,
        api=(host, port),
        embedded=embedded,
        companions={"demo-witness": witness_server, "demo-walkthrough": walkthrough.run},
    )


class _Walkthrough:
    """The steps the demo shows, run as a companion task of the service."""

    def __init__(
        self, settings: Settings, broker: BrokerAddress, local: str, *, serve: bool
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.local = local  # where this process reaches the API
        self.base = settings.public_url.rstrip("/")  # what links and QR codes carry
        self.serve = serve
        self.out = settings.data_dir / "demo"
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self.admin = {"Authorization": f"Bearer {token}"}
        self.recalled = ""
        self.since = 0
        self.inspector: dict[str, str] = {}

    async def run(self, engine: Engine, stop: asyncio.Event) -> None:
        del engine
        try:
            await self._steps(stop)
        except Exception:
            stop.set()  # a failed walkthrough ends the demo with the error, never hangs
            raise
        if self.serve:
            _say(f"\nEverything keeps running at {self.local} (API docs: {self.local}/docs).")
            if self.base != self.local:
                _say(f"Links and QR codes use AGRITRACE_PUBLIC_URL: {self.base}")
            _say("Ctrl-C stops it; run `make demo` again and the log keeps growing.")
        else:
            stop.set()

    async def _steps(self, stop: asyncio.Event) -> None:
        self.out.mkdir(exist_ok=True)
        _say(f"agritrace demo: data in {self.settings.data_dir.resolve()}")
        async with httpx.AsyncClient(base_url=self.local, timeout=10) as http:
            log_vkey = VerifierKey.parse((await _get(http, "/v1/log/vkey")).text)
            _say(f"log key (pinned by every device): {log_vkey}")
            await self._register_parties(http)
            farm_auth = await self._farm_token(http)
            keys = await self._register_devices(http, farm_auth)
            cartons = await self._traffic(keys, log_vkey, stop)
            previous = await self._wait_for_checkpoint(http)
            await self._show_rejections(http)
            await self._verify_bundle(http, cartons[0], log_vkey, previous)
            await self._show_pages(http, cartons)
            await self._supply_chains(http)
            pages = await self._four_pages(http)
        self._try_it(cartons[0], farm_auth, pages)

    async def _register_parties(self, http: httpx.AsyncClient) -> None:
        _say("\n1. Parties, registered by the administrator (POST /v1/parties):")
        for party in PARTIES:
            reply = await http.post("/v1/parties", json=party.body(), headers=self.admin)
            _expect(reply, 201, 409)
            if reply.status_code == 409:
                # Registered by an earlier run: keep its public profile up to date.
                profile = {k: v for k, v in party.body().items() if k not in ("id", "kind")}
                _expect(
                    await http.patch(f"/v1/parties/{party.id}", json=profile, headers=self.admin),
                    200,
                )
            _say(f"   {party.id:<22} {party.kind:<7} {_state(reply)}  {party.name}")

    async def _farm_token(self, http: httpx.AsyncClient) -> dict[str, str]:
        reply = await http.post(f"/v1/parties/{FARM}/tokens", headers=self.admin)
        _expect(reply, 201)
        token = reply.json()["token"]
        _say(f"\n2. A token for {FARM} (shown once, stored hashed): {token}")
        return {"Authorization": f"Bearer {token}"}

    async def _register_devices(
        self, http: httpx.AsyncClient, farm_auth: dict[str, str]
    ) -> dict[str, SignerKey]:
        _say("\n3. Device gateways, registered by the farm itself (POST /v1/devices):")
        keys: dict[str, SignerKey] = {}
        for device in (COLLECT, CLIMATE):
            key = load_or_create_device_key(self.settings.keys_dir, device)
            keys[device] = key
            place, place_en = DEVICE_PLACES[device]
            body = {
                "id": device,
                "party": FARM,
                "public_key": base64.b64encode(key.public_key).decode(),
                "place": place,
                "place_en": place_en,
            }
            reply = await http.post("/v1/devices", json=body, headers=farm_auth)
            _expect(reply, 201, 409)
            _say(f"   {device:<22} kid {key.verifier.kid.hex()}  {_state(reply)}")
        return keys

    async def _traffic(
        self, keys: dict[str, SignerKey], log_vkey: VerifierKey, stop: asyncio.Event
    ) -> list[ProductKey]:
        lot = ProductKey.from_parts(EGG_GTIN, lot=_next_lot(self.settings.data_dir))
        # One GTIN + serial is one item whatever the lot (GS1 General Specifications §3.5.2):
        # each run's cartons get serials of their own, the lot's name and the carton number.
        cartons = [
            ProductKey.from_parts(EGG_GTIN, lot=lot.lot, serial=f"{lot.lot}-C{n:04d}")
            for n in (1, 2)
        ]
        _say(f"\n4. The farm's two gateways (agritrace gateway) send over MQTT ({self.broker}):")
        farm = DemoFarm(
            out=self.out,
            keys_dir=self.settings.keys_dir,
            keys=keys,
            devices=(COLLECT, CLIMATE),
            links=(self.broker, log_vkey, self.base),
            lot=lot,
            cartons=tuple(cartons),
        )
        sent = await farm.run(stop, within_s=SETTLE_SECONDS)
        collect_dir, climate_dir = farm.directories
        _say(f"   {COLLECT}: the packing line's CSV file in its spool")
        _say(f"     commissioned lot {lot.path} and packed 2 cartons from it")
        _say(f"   {CLIMATE}: a Tasmota AM2301 probe publishing on {PROBE_TOPIC}")
        _say("     6 hen-house readings (temperature and humidity) of the lot")
        _say(f"   {sent} messages signed and all receipted; each receipt verified")
        _say("   against the pinned log key before the gateway dropped its copy")
        _say("   a reading signed by the hen house's key, one bit flipped after, was published too")
        _say(f"   their configuration: {collect_dir / 'gateway.toml'}")
        _say(f"                        {climate_dir / 'gateway.toml'}")
        return cartons

    async def _wait_for_checkpoint(self, http: httpx.AsyncClient) -> str | None:
        """Wait for a cosigned checkpoint of the whole log; return the one kept last run."""
        _say("\n5. The log: a checkpoint signed by the log and cosigned by the witness:")
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            metrics = await _get(http, "/metrics")
            reply = await http.get("/v1/log/checkpoint")
            whole_log = _metric(metrics, "agritrace_checkpoint_size") >= _metric(
                metrics, "agritrace_log_entries"
            )
            if (
                reply.status_code == 200
                and whole_log
                and len(parse_note(reply.text).signatures) > 1
            ):
                break
            if time.monotonic() > deadline:
                raise ConfigError("no cosigned checkpoint of the whole log within a minute")
            await asyncio.sleep(0.5)
        for line in reply.text.rstrip("\n").split("\n"):
            _say(f"   {line}")
        kept = self.out / "checkpoint.txt"
        previous = kept.read_text() if kept.exists() else None
        kept.write_text(reply.text)
        return previous

    async def _show_rejections(self, http: httpx.AsyncClient) -> None:
        reply = await http.get("/v1/admin/rejections?limit=1", headers=self.admin)
        _expect(reply, 200)
        rows = reply.json()
        if rows:
            row = rows[0]
            _say(f"\n6. The tampered copy was refused and kept: {row['reason']} ({row['detail']})")

    async def _verify_bundle(
        self,
        http: httpx.AsyncClient,
        carton: ProductKey,
        log_vkey: VerifierKey,
        previous: str | None,
    ) -> None:
        # With the checkpoint of the last run, also prove the log only grew since (no fork).
        query = f"?previous={previous.split(chr(10))[1]}" if previous else ""
        reply = await _get(http, f"/v1/bundle/{carton.path}{query}")
        bundle_path = self.out / "bundle.json"
        bundle_path.write_text(reply.text)
        witness_vkey = self.settings.witnesses.split("=", 1)[1]
        policy_text = f"log {log_vkey}\nwitness {WITNESS_NAME} {witness_vkey}\nquorum 1\n"
        policy_path = self.out / "policy.txt"
        policy_path.write_text(policy_text)
        report = verify_bundle(parse_bundle(reply.text), Policy.parse(policy_text), previous)
        _say(f"\n7. The carton's evidence bundle ({bundle_path}), verified offline:")
        for line in report.render().rstrip("\n").split("\n"):
            _say(f"   {line}")
        if not report.ok:
            raise ConfigError("the demo's own bundle did not verify")

    async def _show_pages(self, http: httpx.AsyncClient, cartons: list[ProductKey]) -> None:
        """Scan the cartons as a buyer's phone would; print their pages and one QR code."""
        _say("\n8. What a buyer sees after scanning (GET /{key}; HTML, or JSON on request):")
        uris = []
        for carton in cartons:
            reply = await http.get(f"/{carton.path}", headers={"Accept": "application/json"})
            _expect(reply, 200)
            body = reply.json()
            # The link as the server makes it (its QR codes carry the same), not a guess of ours.
            uris.append(body["product"]["uri"])
            _say(f"   {body['verdict']:<9} {uris[-1]}   (English: add ?lang=en)")
        judged = [c for c in body.get("contracts", []) if c["status"] != "not_applicable"]
        if judged:
            summary = ", ".join(f"{c['id']} {c['status']}" for c in judged)
            _say(f"   contracts of the last carton: {summary}")
        _say(f"   the QR code of the first carton ({self.base}/qr/{cartons[0].path}.svg):")
        _say(_qr_text(uris[0]))

    async def _supply_chains(self, http: httpx.AsyncClient) -> None:
        """Run the egg and the beef scenarios of firmware_sim at accelerated time."""
        _say(f"\n9. Two Gansu supply chains at accelerated time ({SCENARIO_SECONDS:.0f} s each):")
        token = self.admin["Authorization"].removeprefix("Bearer ")
        self.since = _now_ms()  # this run's products: a rerun shows new ones
        for name, speed, excursions in SCENARIOS:
            options = SimOptions(
                scenario=name,
                api=self.local,
                broker=self.broker,
                data_dir=self.settings.data_dir,
                admin_token=token,
                speed=speed,
                duration_s=SCENARIO_SECONDS,
                excursion_rate=excursions,
                settle_s=SETTLE_SECONDS / 2,
            )
            summary = await run_simulation(options)
            if summary.pending or summary.unexpected_rejections:
                raise ConfigError(f"the {name} scenario did not settle:\n{summary.render()}")
            warm = f", {excursions:.0%} of cold-chain readings too warm" if excursions else ""
            hours = SCENARIO_SECONDS * speed / 3600
            _say(
                f"   {name:<4} {hours:>3.0f} h in {SCENARIO_SECONDS:.0f} s: {summary.receipted:>4} "
                f"signed messages receipted, {summary.products} products{warm}"
            )
        inspector = await self._inspector_token(http)
        # An animal that went to slaughter: recalling it recalls its carcass and cuts at once.
        found = await self._search(
            http, inspector, f"/v1/products?step=killing&from={self.since}&limit=1"
        )
        animal = str(found[0]["key"])
        reply = await http.post(
            "/v1/recalls",
            json={"product": animal, "reason": "兽药残留超标 drug residue above the limit (demo)"},
            headers=inspector,
        )
        _expect(reply, 201)
        _say(f"   an inspector of {INSPECTOR} recalled the animal {animal} (POST /v1/recalls)")
        self.recalled = animal

    async def _inspector_token(self, http: httpx.AsyncClient) -> dict[str, str]:
        """The Authorization header of the demo's market supervisor (one token per run)."""
        if self.inspector:
            return self.inspector
        body = {"id": INSPECTOR, "name": "甘肃省市场监督管理局 Gansu AMR", "kind": "inspector"}
        _expect(await http.post("/v1/parties", json=body, headers=self.admin), 201, 409)
        reply = await http.post(f"/v1/parties/{INSPECTOR}/tokens", headers=self.admin)
        _expect(reply, 201)
        self.inspector = {"Authorization": f"Bearer {reply.json()['token']}"}
        return self.inspector

    async def _search(
        self, http: httpx.AsyncClient, auth: dict[str, str], query: str
    ) -> list[dict[str, object]]:
        """The products an inspector's search finds, waiting for checkpoint and contracts."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            reply = await http.get(query, headers=auth)
            _expect(reply, 200)
            rows: list[dict[str, object]] = reply.json()
            if rows:
                return rows
            if time.monotonic() > deadline:
                raise ConfigError(f"nothing found by {query} within {SETTLE_SECONDS} s")
            await asyncio.sleep(0.5)

    async def _four_pages(self, http: httpx.AsyncClient) -> dict[str, tuple[str, str]]:
        """Find a product with an excursion, a clean one, one failing a contract and a recalled
        one; print their pages and the stall page of the shop. Return label → (key, link)."""
        inspector = await self._inspector_token(http)
        _say("\n10. Four products as a buyer sees them (the verdict is computed at each scan):")
        pages: dict[str, tuple[str, str]] = {}
        key, meaning = await self._excursion(http, inspector)
        pages["excursion"] = await self._page(http, key, "excursion", meaning)
        key = await self._clean(http, inspector)
        pages["clean"] = await self._page(http, key, "clean", "verified, every contract passed")
        key, meaning = await self._failing(http, inspector)
        pages["failing"] = await self._page(http, key, "failing", meaning)
        reply = await http.get(
            f"/v1/lineage/{self.recalled}?direction=forward&depth=all", headers=inspector
        )
        _expect(reply, 200)
        made_from = [str(key) for key in reply.json()["forward"]]
        shown = made_from[-1] if made_from else self.recalled
        pages["recalled"] = await self._page(
            http, shown, "recalled", "made from the recalled animal"
        )
        pages["stall"] = await self._stall(http, pages["clean"][0])
        clean, link = pages["clean"]
        _say(f"   the QR code of the clean one ({self.base}/qr/{clean}.svg):")
        _say(_qr_text(link))
        return pages

    async def _stall(self, http: httpx.AsyncClient, key: str) -> tuple[str, str]:
        """The stall page of the shop that received ``key``: one stall, one code (一摊一码)."""
        scan = await http.get(f"/{key}", headers={"Accept": "application/json"})
        _expect(scan, 200)
        events = scan.json()["events"]
        steps = ("retail_selling", "receiving")
        seller = next(
            (str(e["party"]["id"]) for e in reversed(events) if e["step"] in steps),
            str(scan.json()["product"]["owner"]["id"]),
        )
        reply = await http.get(f"/p/{seller}", headers={"Accept": "application/json"})
        _expect(reply, 200)
        stall = reply.json()
        url = str(stall["url"])
        _say(f"   stall     {stall['credit']['score']:>3}/100   {url}")
        _say(
            f"   {'':<19} the shop's own page and QR code, {len(stall['products'])} recent "
            f"products with their verdicts; printable label: {url}/label"
        )
        return seller, url

    async def _clean(self, http: httpx.AsyncClient, inspector: dict[str, str]) -> str:
        """A serialized egg case (what a buyer holds in the shop) that fails no contract.

        Cases of the treated flock pass the egg cold chain too, but fail drug-withdrawal once
        sold; so each candidate is scanned.
        """
        rows = await self._search(
            http,
            inspector,
            f"/v1/products?contract=egg-cold-chain&status=pass&from={self.since}&limit=1000",
        )
        keys = [str(row["key"]) for row in rows]
        for key in sorted(k for k in keys if "/21/" in k) or keys:
            scan = await http.get(f"/{key}", headers={"Accept": "application/json"})
            _expect(scan, 200)
            body = scan.json()
            if body["verdict"] == "verified" and all(
                c["status"] != "fail" for c in body["contracts"]
            ):
                return key
        raise ConfigError("no egg product of this run passes every contract")

    async def _failing(self, http: httpx.AsyncClient, inspector: dict[str, str]) -> tuple[str, str]:
        """An egg case of the treated flock sold during its withdrawal, and the contract's reason.

        The evidence is genuine, so its verdict stays ``verified``: the contract result is what
        tells the buyer (and the inspector) that these eggs should not have been sold.
        """
        query = f"/v1/products?contract=drug-withdrawal&status=fail&from={self.since}&limit=1000"
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            rows = await self._search(http, inspector, query)
            for key in sorted(str(row["key"]) for row in rows if "/21/" in str(row["key"])):
                scan = await http.get(f"/{key}", headers={"Accept": "application/json"})
                _expect(scan, 200)
                for result in scan.json()["contracts"]:
                    if result["id"] == "drug-withdrawal" and result["status"] == "fail":
                        reason = result["reasons"][0]["text"] if result["reasons"] else ""
                        return key, f"drug-withdrawal contract fails: {reason}"
            if time.monotonic() > deadline:
                raise ConfigError(f"no egg case failing drug-withdrawal within {SETTLE_SECONDS} s")
            await asyncio.sleep(0.5)

    async def _excursion(
        self, http: httpx.AsyncClient, inspector: dict[str, str]
    ) -> tuple[str, str]:
        """A meat product with readings above its limit, and what its contract made of them.

        At accelerated time an excursion lasts seconds of device time, within the chilled-meat
        contract's 30 min tolerance, so the contract usually passes; the chart still marks it.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            for status in ("fail", "pass"):
                query = (
                    f"/v1/products?contract=chilled-meat&status={status}&from={self.since}"
                    "&limit=1000"
                )
                reply = await http.get(query, headers=inspector)
                _expect(reply, 200)
                for row in reply.json():
                    # Scanned again on every round: a cut's warm readings may reach a signed
                    # checkpoint after its first scan (seen under CI load).
                    key = str(row["key"])
                    scan = await http.get(f"/{key}", headers={"Accept": "application/json"})
                    _expect(scan, 200)
                    if scan.json()["verdict"] != "verified":
                        continue  # recalled: the next page shows one of those
                    for result in scan.json()["contracts"]:
                        if result["id"] != "chilled-meat":
                            continue
                        above = sum(
                            v for k, v in result["measures"].items() if k.startswith("cut_ms_above")
                        )
                        if result["status"] == "fail" or above:
                            return key, (
                                f"readings above 4 °C marked on its chart; chilled-meat contract: "
                                f"{result['status']} ({above / 1000:.1f} s above 4 °C in device "
                                "time: accelerated time compresses durations)"
                            )
            await asyncio.sleep(0.5)
        raise ConfigError(f"no meat product with an excursion within {SETTLE_SECONDS} s")

    async def _page(
        self, http: httpx.AsyncClient, key: str, label: str, meaning: str
    ) -> tuple[str, str]:
        """Scan ``key`` and print its verdict and link; the recalled one once a checkpoint holds
        the recall (the verdict is computed from signed evidence only). Return key and link."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            reply = await http.get(f"/{key}", headers={"Accept": "application/json"})
            _expect(reply, 200)
            verdict = reply.json()["verdict"]
            if label != "recalled" or verdict == "recalled" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        failed = [c["id"] for c in reply.json()["contracts"] if c["status"] == "fail"]
        if label == "clean" and (verdict != "verified" or failed):
            raise ConfigError(f"the clean product {key} is {verdict}, failing {failed}")
        uri: str = reply.json()["product"]["uri"]
        _say(f"   {label:<9} {verdict:<9} {uri}")
        _say(f"   {'':<19} {meaning}")
        return key, uri

    def _try_it(
        self, carton: ProductKey, farm_auth: dict[str, str], pages: dict[str, tuple[str, str]]
    ) -> None:
        base, out = self.base, self.out
        _say("\n11. Try it yourself:")
        _say(f"   agritrace verify {out / 'bundle.json'} --policy {out / 'policy.txt'}")
        _say(f"   curl -o bundle.json {base}/v1/bundle/{carton.path}")
        _say(f"   curl {base}/v1/log/checkpoint    curl {base}/metrics")
        _say(f"   curl -H 'Accept: application/json' {pages['failing'][1]}")
        gaps = f"{base}/v1/devices/{COLLECT}/gaps"
        _say(f"   curl -H 'Authorization: {farm_auth['Authorization']}' {gaps}")
        _say(
            f"   curl -H 'Authorization: {self.admin['Authorization']}' {base}/v1/admin/rejections"
        )
        if self.inspector:
            token = self.inspector["Authorization"].removeprefix("Bearer ")
            _say(f"   the inspection console: {base}/console/")
            _say(f"     sign in as {INSPECTOR} with the token {token}")
        farm_token = farm_auth["Authorization"].removeprefix("Bearer ")
        _say(f"   the producer console: {base}/console/")
        _say(f"     sign in as {FARM} with the token {farm_token}")


def _metric(reply: httpx.Response, name: str) -> float:
    for line in reply.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _next_lot(data_dir: Path) -> str:
    """Name a new lot per run, after the laying day as Gansu packers print them: L + yymmdd."""
    day = datetime.now(tz=UTC).strftime("%y%m%d")
    counter = data_dir / "demo" / "runs"
    run = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(run))
    return f"L{day}-{run}"


def _admin_token(settings: Settings) -> SecretStr:
    """The admin token: AGRITRACE_ADMIN_TOKEN, or one made for the demo and kept in the data dir."""
    if settings.admin_token is not None:
        return settings.admin_token
    path = settings.data_dir / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return SecretStr(path.read_text().strip())


def _check_port_free(host: str, port: int) -> None:
    with contextlib.closing(socket.socket()) as sock:
        if sock.connect_ex((host, port)) == 0:
            raise ConfigError(f"{host}:{port} is in use; stop what runs there or pass --port")


def _free_port(host: str, preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port the OS picks."""
    with contextlib.closing(socket.socket()) as sock:
        if sock.connect_ex((host, preferred)) != 0:
            return preferred
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _get(http: httpx.AsyncClient, path: str) -> httpx.Response:
    reply = await http.get(path)
    _expect(reply, 200)
    return reply


def _expect(reply: httpx.Response, *codes: int) -> None:
    if reply.status_code not in codes:
        raise ConfigError(
            f"{reply.request.method} {reply.request.url.path} answered {reply.status_code}: "
            f"{reply.text}"
        )


def _state(reply: httpx.Response) -> str:
    return "registered" if reply.status_code == 201 else "found again"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _qr_text(uri: str, quiet: int = 2) -> str:
    """The QR code of ``uri`` in half-block characters, two modules a line (as qrencode -t UTF8
    draws it: light modules are the printed ones, for a dark terminal)."""
    modules = pyqrcode.create(uri, error="M").code
    width = len(modules[0]) + 2 * quiet
    light = [[1] * width for _ in range(quiet)]
    rows = light + [[1] * quiet + [1 - m for m in row] + [1] * quiet for row in modules] + light
    if len(rows) % 2:
        rows.append([0] * width)
    glyphs = {(1, 1): "█", (1, 0): "▀", (0, 1): "▄", (0, 0): " "}
    return "\n".join(
        "   " + "".join(glyphs[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[::2], rows[1::2], strict=True)
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
