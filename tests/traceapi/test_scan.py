"""GET /01/...: verdicts, redirects, unknown codes, the page in both languages, copy detection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from trace_kit import (
    CARTON,
    CLIMATE,
    COLLECT,
    FARM,
    FLOCK,
    GTIN,
    LOG,
    LOT,
    T0,
    World,
    make_world,
)

from tracecore.bundle import Policy, parse_bundle, verify_bundle
from tracecore.identifiers import ProductKey
from tracecore.message import Event, Reading, Sensor

JSON = {"Accept": "application/json"}


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit, served by the API."""
    with make_world(engine, app_client, copy_threshold=2) as built:
        yield built


def test_json_scan_of_a_genuine_carton_is_verified(world: World) -> None:
    """A carton with an intact history is verified, with its checks, lineage and readings."""
    reply = world.client.get(f"/{CARTON.path}", headers=JSON)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["verdict"] == "verified", body["checks"]
    names = [c["name"] for c in body["checks"]]
    for name in ("checkpoint", "messages", "keys", "chains", "inclusion", "owner", "completeness"):
        assert name in names
    assert all(c["ok"] for c in body["checks"])
    assert body["product"]["owner"] == {"id": FARM, "name": "临夏蛋鸡场 Linxia Hens"}
    assert body["product"]["serial"] == "C0001"
    assert body["lineage"]["ancestors"] == [LOT.path, FLOCK.path]
    (series,) = body["readings"]
    assert [p["value"] for p in series["points"]] == [21.0, 5.5, 6.0, 8.4, 6.2]
    assert series["device"] == CLIMATE.name
    assert [e["step"] for e in body["events"]] == ["commissioning"] * 3
    # 2 registrations, 8 device messages and the product index's root
    assert body["checkpoint"]["size"] == 11
    assert body["bundle_url"].endswith(f"/v1/bundle/{CARTON.path}")


def test_lot_scan_lists_the_carton_made_from_it(world: World) -> None:
    """One step forward: the lot's answer names the carton packed from it."""
    body = world.client.get(f"/{LOT.path}", headers=JSON).json()
    assert body["verdict"] == "verified"
    assert body["lineage"]["children"] == [CARTON.path]
    assert body["scans"] is None  # lot codes are not serialized: no copy detection


def test_gtin13_and_lowercase_escapes_redirect_to_the_canonical_path(world: World) -> None:
    """A GTIN-13 or another spelling of the key answers 308 to the one canonical URL."""
    reply = world.client.get(f"/01/{GTIN[1:]}/10/L261127/21/C0001?lang=en")
    assert reply.status_code == 308
    assert reply.headers["location"] == f"/{CARTON.path}?lang=en"


def test_unknown_and_malformed_codes_are_404_unknown(world: World) -> None:
    """A code nobody registered is 404 unknown, in JSON and on a page that warns the buyer."""
    reply = world.client.get(f"/01/{GTIN}/10/NOPE", headers=JSON)
    assert reply.status_code == 404
    assert reply.json()["verdict"] == "unknown"
    page = world.client.get(f"/01/{GTIN}/10/NOPE", headers={"Accept-Language": "en"})
    assert page.status_code == 404
    assert "may be counterfeit" in page.text
    bad = world.client.get("/01/12345/10/X", headers=JSON)  # bad check digit
    assert bad.status_code == 404
    assert bad.json()["verdict"] == "unknown"
    assert "not a product code" in bad.json()["detail"]


def test_page_speaks_chinese_by_default_and_english_on_request(world: World) -> None:
    """Accept-Language picks the language, ?lang= overrides it; the verdict banner is there."""
    zh = world.client.get(f"/{CARTON.path}")
    assert zh.status_code == 200
    assert zh.headers["content-type"].startswith("text/html")
    assert 'lang="zh-CN"' in zh.text
    assert "已验证" in zh.text
    en = world.client.get(f"/{CARTON.path}", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert 'lang="en"' in en.text
    assert "Verified" in en.text
    switched = world.client.get(f"/{CARTON.path}?lang=zh", headers={"Accept-Language": "en"})
    assert "已验证" in switched.text


def test_page_draws_the_temperature_chart_with_the_excursion(world: World) -> None:
    """The SVG has the 7.2 °C egg limit, shades the 8.4 °C excursion, leaves out the hen house."""
    page = world.client.get(f"/{LOT.path}?lang=en").text
    assert "<svg" in page
    assert "limit 7.2 °C" in page
    assert page.count('fill="#ffcecb"') == 1  # one excursion band
    assert "above 7.2 °C" in page.split('id="coldchain"', 1)[1].split("</p>", 1)[0]
    assert ">21<" not in page.split("<svg", 1)[1].split("</svg>", 1)[0]
    flock_page = world.client.get(f"/{FLOCK.path}?lang=en").text
    assert "limit" not in flock_page.split("<svg", 1)[1].split("</svg>", 1)[0]


def test_recall_of_the_lot_recalls_the_carton(world: World) -> None:
    """A recall of the lot turns the lot and the carton made from it to recalled at once."""
    reply = world.client.post(
        "/v1/recalls",
        json={"product": LOT.path, "reason": "Salmonella in lot samples"},
        headers=world.auth("inspector"),
    )
    assert reply.status_code == 201, reply.text
    world.checkpoint()
    for key in (LOT, CARTON):
        body = world.client.get(f"/{key.path}", headers=JSON).json()
        assert body["verdict"] == "recalled", body
        assert body["recalls"][0]["reason"] == "Salmonella in lot samples"
    page = world.client.get(f"/{CARTON.path}?lang=en").text
    assert "Salmonella in lot samples" in page


def test_many_distinct_clients_make_a_serial_a_suspect_copy(world: World) -> None:
    """More distinct clients than the threshold (2 here) scanning one serial: suspect_copy."""
    verdicts = []
    for n in range(4):
        world.now[0] += 60_000
        reply = world.client.get(
            f"/{CARTON.path}?place=Lanzhou",
            headers={**JSON, "X-Forwarded-For": f"10.0.0.{n}"},
        )
        verdicts.append(reply.json()["verdict"])
    # X-Forwarded-For is not trusted by default: all four scans come from one client.
    assert verdicts == ["verified"] * 4


def test_copy_detection_counts_distinct_clients_behind_a_trusted_proxy(
    engine: Engine, app_client: Any
) -> None:
    """Behind a trusted proxy, the third distinct client pushes the serial over threshold 2."""
    with make_world(engine, app_client, copy_threshold=2, trust_forwarded=True) as world:
        verdicts = []
        for n in range(4):
            world.now[0] += 60_000
            reply = world.client.get(
                f"/{CARTON.path}?place=Lanzhou",
                headers={**JSON, "X-Forwarded-For": f"10.0.0.{n % 3}"},
            )
            verdicts.append(reply.json()["verdict"])
        assert verdicts == ["verified", "verified", "suspect_copy", "suspect_copy"]
        body = reply.json()
        assert body["scans"]["clients"] == 3
        assert body["scans"]["scans"] == 4
        assert body["scans"]["first_place"] == "Lanzhou"
        assert body["scans"]["first_ms"] == T0 + 9_000 + 60_000


@pytest.mark.parametrize(
    "proxies", [{"trusted_proxies": 1}, {"trust_forwarded": True}, {"trusted_proxies": 2}]
)
def test_a_spoofed_leftmost_forwarded_entry_is_not_a_new_client(
    engine: Engine, app_client: Any, proxies: dict[str, Any]
) -> None:
    """Behind proxies that append, entries the client wrote itself do not make new clients."""
    with make_world(engine, app_client, copy_threshold=2, **proxies) as world:
        hops = world.client.app.state.settings.proxy_hops
        # The client's own X-Forwarded-For, then what each proxy appended: the client as the
        # outermost proxy saw it, then the inner proxies.
        appended = ["203.0.113.7"] + [f"10.0.0.{n}" for n in range(1, hops)]
        verdicts = []
        for n in range(6):
            world.now[0] += 60_000
            spoofed = f"198.51.100.{n}"
            reply = world.client.get(
                f"/{CARTON.path}",
                headers={**JSON, "X-Forwarded-For": ", ".join([spoofed, *appended])},
            )
            verdicts.append(reply.json()["verdict"])
        assert verdicts == ["verified"] * 6
        assert reply.json()["scans"]["clients"] == 1
        # Two more real clients (as the outermost proxy saw them) pass the threshold of 2.
        for client in ("203.0.113.8", "203.0.113.9"):
            world.now[0] += 60_000
            forwarded = ", ".join(["198.51.100.1", client, *appended[1:]])
            reply = world.client.get(
                f"/{CARTON.path}", headers={**JSON, "X-Forwarded-For": forwarded}
            )
        assert reply.json()["verdict"] == "suspect_copy"
        assert reply.json()["scans"]["clients"] == 3


def test_a_new_product_waits_for_its_checkpoint(world: World) -> None:
    """A reading after the last checkpoint is not in the answer until the next checkpoint."""
    world.send(
        CLIMATE,
        lambda seq, time: Reading(
            CLIMATE.name, seq, time, (LOT,), (Sensor("Temperature", 5.0, "CEL"),)
        ),
    )
    before = world.client.get(f"/{LOT.path}", headers=JSON).json()
    assert before["readings"][0]["total"] == 5
    world.checkpoint()
    after = world.client.get(f"/{LOT.path}", headers=JSON).json()
    assert after["readings"][0]["total"] == 6
    assert after["verdict"] == "verified"


def test_contract_results_are_in_the_answer_and_on_the_page(world: World) -> None:
    """A warm reading two days after laying fails the egg cold chain, in JSON and on the page."""
    world.now[0] += 2 * 86_400_000
    world.send(
        CLIMATE,
        lambda seq, time: Reading(
            CLIMATE.name, seq, time, (LOT,), (Sensor("Temperature", 9.5, "CEL"),)
        ),
    )
    world.checkpoint()
    body = world.client.get(f"/{CARTON.path}", headers=JSON).json()
    results = {c["id"]: c for c in body["contracts"]}
    assert results["egg-cold-chain"]["status"] == "fail"
    assert results["egg-cold-chain"]["measures"]["readings"] == 1
    assert results["egg-cold-chain"]["log_size"] == body["checkpoint"]["size"]
    assert results["brucellosis"]["status"] == "not_applicable"
    assert all(len(c["source_sha256"]) == 64 for c in body["contracts"])
    page = world.client.get(f"/{CARTON.path}?lang=en").text
    assert '<td class="fail"><span aria-hidden="true">✖ </span>Egg cold chain' in page
    assert "Brucellosis" not in page  # not applicable: not shown


def test_products_named_in_one_message_each_verify_alone(world: World) -> None:
    """Two lots commissioned in one event, their cartons shipped in one: each verifies.

    Each carton's bundle holds the other carton's shipping entry but not the rest of its chain;
    that partial chain is context, not what the bundle proves (a scenario run found this).
    """
    lot2 = ProductKey.parse(f"01/{GTIN}/10/L261128")
    carton2 = ProductKey.parse(f"01/{GTIN}/10/L261128/21/C0101")
    lot3 = ProductKey.parse(f"01/{GTIN}/10/L261129")
    world.send(
        COLLECT,
        lambda seq, time: Event(
            COLLECT.name, seq, time, (lot2, lot3), "commissioning", parents=(FLOCK,)
        ),
    )
    world.send(
        COLLECT,
        lambda seq, time: Event(
            COLLECT.name, seq, time, (carton2,), "commissioning", parents=(lot2,)
        ),
    )
    world.send(
        COLLECT, lambda seq, time: Event(COLLECT.name, seq, time, (CARTON, carton2), "shipping")
    )
    world.checkpoint()
    for key in (CARTON, carton2, lot3):
        body = world.client.get(f"/{key.path}", headers=JSON).json()
        assert body["verdict"] == "verified", (key, body["checks"])
        bundle = parse_bundle(world.client.get(f"/v1/bundle/{key.path}").text)
        assert verify_bundle(bundle, Policy(LOG.verifier, {}, 0)).ok


def test_page_policy_download_verifies_the_bundle(world: World) -> None:
    """The page's policy and bundle downloads are what `agritrace verify` needs, and verify."""
    page = world.client.get(f"/{CARTON.path}?lang=en").text
    assert '/v1/log/policy" download="policy.txt"' in page
    assert f'/v1/bundle/{CARTON.path}" download="bundle.json"' in page
    text = world.client.get("/v1/log/policy").text
    policy = Policy.parse(text)
    assert policy.log == LOG.verifier
    assert text.startswith("#")  # it says to compare the keys with their owners'
    bundle = world.client.get(f"/v1/bundle/{CARTON.path}").text
    report = verify_bundle(parse_bundle(bundle), policy)
    assert report.ok, report.render()
