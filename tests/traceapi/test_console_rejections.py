"""The console's rejections and gaps (docs/inspection.md, "Rejections and gaps").

Over a pages world whose devices sent refused messages through the real ingest path
(rejection_kit): the counts per reason and day, the filters, the gaps, one refusal explained
and downloaded, a device's page, escaping, 404s, sign-in, and whose data each page shows.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from pydantic import SecretStr
from rejection_kit import GHOST, MARKUP, ROGUE, Refusals, add_refusals, cst_day, table_rows
from sqlmodel import select
from trace_kit import ADMIN, CLIMATE, COLLECT, FARM, LOG, ORIGIN
from vnu_kit import html_problems

from traceapi.access import noted_parties
from traceapi.app import create_app
from traceapi.console.rejections import periods, reader_party
from traceapi.console.session import ConsoleUser
from traceapi.i18n import LANGUAGES, text
from tracecore.errors import NotFound, RejectReason
from tracecore.rejected import CHECKS, KINDS, CheckState
from tracecore.settings import Settings
from tracecore.storage import session_scope
from tracecore.storage.models import Device
from tracecore.storage.queries import device_gaps
from tracecore.storage.rejections import (
    NO_PARTY,
    RejectionFilter,
    find_rejection,
    gap_counts,
    reason_totals,
    rejection_list,
)


@pytest.fixture(scope="module")
def refusals(console_world: Any) -> Refusals:
    """The refused messages of rejection_kit, added once for the module."""
    return add_refusals(console_world.world)


@pytest.fixture(scope="module")
def inspector(console_world: Any, refusals: Refusals) -> Iterator[httpx.Client]:
    """A console client signed in as the world's inspector (after the refusals exist)."""
    del refusals
    with console_world.client("inspector") as client:
        yield client


def _get(client: httpx.Client, path: str, **params: str) -> httpx.Response:
    response = client.get(path, params={"lang": "en", **params})
    assert response.status_code == 200, response.text
    return response


def _footer(page: str) -> dict[str, int]:
    """The overview's total per reason (the foot of the table over time)."""
    cells = re.findall(r'<td class="num" data-reason="([a-z_]+)">(\d+)</td>', page)
    return {reason: int(count) for reason, count in cells}


def test_counts_per_reason_over_the_default_30_days(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """Each reason's count is the number of refused messages of the last 30 days (a message
    sent three times counts once); the refusal of 40 days ago is not in them."""
    page = _get(inspector, "/console/rejections").text
    assert _footer(page) == dict(refusals.messages)
    assert sum(refusals.messages.values()) == 8
    total = re.search(r'id="total-messages">(\d+)<', page)
    assert total is not None
    assert int(total.group(1)) == sum(refusals.messages.values())
    summary = (
        f"{sum(refusals.messages.values())} messages refused, "
        f"{sum(refusals.arrivals.values())} arrivals"
    )
    assert summary in page
    assert refusals.arrivals["bad_signature"] == 3


def test_counts_per_day_in_china_standard_time(inspector: httpx.Client, refusals: Refusals) -> None:
    """The table has one row per CST day of the range, newest first, each reason counted on
    its day."""
    page = _get(inspector, "/console/rejections").text
    rows = table_rows(page, "reason-table")
    header, body = rows[0], rows[1:-1]
    reasons = [r for r in RejectReason if r.value in refusals.messages]
    assert len(header) == len(reasons) + 2
    today = cst_day(refusals.now)
    assert [row[0] for row in body] == [(today - timedelta(days=n)).isoformat() for n in range(30)]
    for row in body:
        day = row[0]
        for reason, cell in zip(reasons, row[1:-1], strict=True):
            expected = sum(
                count
                for (when, name), count in refusals.days.items()
                if when.isoformat() == day and name == reason.value
            )
            assert int(cell) == expected, (day, reason)
        assert int(row[-1]) == sum(int(cell) for cell in row[1:-1])


def test_weeks_start_on_monday_and_hold_the_same_counts(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """Per week: rows from the Monday on or before the start (newest first), the same totals."""
    page = _get(inspector, "/console/rejections", by="week").text
    body = table_rows(page, "reason-table")[1:-1]
    firsts = [row[0].split(" to ")[0] for row in reversed(body)]
    spans = periods(cst_day(refusals.now), None, None, "week")
    assert firsts[0] == spans.origin.isoformat()
    assert spans.origin.weekday() == 0
    assert all(
        (spans.origin + timedelta(days=7 * n)).isoformat() == first
        for n, first in enumerate(firsts)
    )
    assert sum(int(row[-1]) for row in body) == sum(refusals.messages.values())


def test_a_wider_range_holds_the_old_refusal(inspector: httpx.Client, refusals: Refusals) -> None:
    """The refusal of 40 days ago counts once the range reaches back to it."""
    start = (cst_day(refusals.now) - timedelta(days=45)).isoformat()
    page = _get(inspector, "/console/rejections", **{"from": start}).text
    expected = refusals.messages.copy()
    expected["malformed"] += 1
    assert _footer(page) == dict(expected)
    assert f"/console/rejections/{refusals.ids['old']}?" in page


def test_filters_by_reason_party_and_device(inspector: httpx.Client, refusals: Refusals) -> None:
    """Reason, party, no registered device and device each narrow every count."""
    only = _footer(_get(inspector, "/console/rejections", reason="bad_signature").text)
    assert only == {"bad_signature": 1}
    farm = _footer(_get(inspector, "/console/rejections", party=FARM).text)
    assert farm == {
        "too_large": 1,
        "malformed": 1,
        "unknown_key": 1,
        "revoked_key": 1,
        "bad_signature": 1,
    }
    unregistered = _footer(_get(inspector, "/console/rejections", party=NO_PARTY).text)
    assert unregistered == {"malformed": 1, "unknown_device": 2}
    climate = _get(inspector, "/console/rejections", device=CLIMATE.name).text
    assert _footer(climate) == {"malformed": 1, "unknown_key": 1, "bad_signature": 1}
    assert f'value="{CLIMATE.name}"' in climate
    nobody = _get(inspector, "/console/rejections", party="gansu-vet-lab").text
    assert "No message was refused in this range." in nobody


def test_per_party_and_per_device_tables_link_to_devices(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """The farm and each of its devices are listed with their counts; devices link to their
    pages."""
    page = _get(inspector, "/console/rejections").text
    parties = {row[0].split()[-1]: row for row in table_rows(page, "by-party-table")[1:]}
    assert parties[FARM][2] == "5"
    assert parties[FARM][1] == "3"  # climate, collect, rogue
    devices = {row[0]: row for row in table_rows(page, "by-device-table")[1:]}
    assert devices[CLIMATE.name][2:4] == ["3", "5"]  # three messages, one sent three times
    assert devices[GHOST.name][1] == "No registered device"
    for device in (CLIMATE.name, COLLECT.name, ROGUE.name, GHOST.name):
        assert f'href="/console/rejections/devices/{device}?lang=en"' in page
    assert refusals.ids


def test_gaps_per_device_on_the_overview(inspector: httpx.Client) -> None:
    """The rogue device misses seqs 2-4: three, in one range; no other device misses any."""
    page = _get(inspector, "/console/rejections").text
    rows = table_rows(page, "gaps-table")[1:]
    assert rows == [[ROGUE.name, f"Linxia Hens {FARM}", "3", "5", "2–4"]]


def test_gap_counts_agree_with_the_gap_search(console_world: Any, refusals: Refusals) -> None:
    """gap_counts finds exactly the devices device_gaps finds gaps for, with their sizes."""
    del refusals
    with session_scope(console_world.engine) as session:
        devices = session.exec(select(Device.id)).all()
        searched = {
            device: sum(b - a + 1 for a, b in device_gaps(session, device)) for device in devices
        }
        counted = {gap.device_id: gap.missing for gap in gap_counts(session)}
        assert counted == {device: n for device, n in searched.items() if n}
        assert counted == {ROGUE.name: 3}
        assert gap_counts(session, party="gansu-vet-lab") == []


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("bad_signature", "Signature"),
        ("unknown_key", "Key known"),
        ("malformed", "CBOR encoding"),
        ("too_large", "Read limit"),
        ("unknown_device", "Device registered"),
        ("markup_topic", "Topic form"),
        ("revoked_key", "Key valid"),
    ],
)
def test_the_detail_names_the_check(
    inspector: httpx.Client, refusals: Refusals, name: str, check: str
) -> None:
    """Each refusal's page names the check of docs/protocol.md that refused it, marks it in
    the list of checks, and shows the stored detail."""
    page = _get(inspector, f"/console/rejections/{refusals.ids[name]}").text
    found = re.search(
        r'<p id="refused-by"><strong>Refused by the check:</strong>\s*([^<—]+)—', page
    )
    assert found is not None, page
    assert found.group(1).strip() == check
    refused = re.findall(r'<li class="refused" aria-current="step">.*?</span>([^<]+) <', page)
    assert refused == [check]
    assert 'id="stored-detail"' in page


def test_the_detail_in_chinese(inspector: httpx.Client, refusals: Refusals) -> None:
    """The same page in Chinese names the reason and the check in Chinese."""
    response = inspector.get(
        f"/console/rejections/{refusals.ids['bad_signature']}", params={"lang": "zh"}
    )
    assert "问题：签名无效" in response.text
    assert re.search(r"拒收它的检查：</strong>\s*签名 —", response.text)


def test_a_signed_message_is_decoded(inspector: httpx.Client, refusals: Refusals) -> None:
    """The bad signature's header, payload fields and arrivals are shown."""
    page = html.unescape(
        _get(inspector, f"/console/rejections/{refusals.ids['bad_signature']}").text
    )
    kid = hashlib.sha256(CLIMATE.public_key).digest()[:8].hex()
    assert f'id="kid">{kid}<' in page
    assert "Follows the protocol's COSE profile" in page
    assert "The fields follow their rules" in page
    assert f'"{CLIMATE.name}"' in page
    assert '"Temperature"' in page
    assert 'id="arrivals">arrivals: 3<' in page


def test_bytes_that_do_not_parse_show_a_hex_dump(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """Malformed bytes: the parser's complaint and the hex dump of the first bytes."""
    page = _get(inspector, f"/console/rejections/{refusals.ids['malformed']}").text
    raw = refusals.raws["malformed"]
    assert "Does not parse" in page
    assert " ".join(f"{b:02x}" for b in raw[:16]) in page
    assert "|..this is not CB|" in page
    assert "|OR &lt;i&gt;at all&lt;/i&gt;|" in page  # the ASCII column, escaped


def test_too_large_says_only_a_prefix_was_kept(inspector: httpx.Client, refusals: Refusals) -> None:
    """A too_large refusal says only its first 1024 bytes were kept, and of how many."""
    page = _get(inspector, f"/console/rejections/{refusals.ids['too_large']}").text
    length = len(refusals.raws["too_large"])
    assert f"only its first 1024 bytes of {length} were kept" in page
    assert hashlib.sha256(refusals.raws["too_large"]).hexdigest() in page


@pytest.mark.parametrize("name", ["bad_signature", "malformed", "too_large", "markup_device"])
def test_raw_download_is_byte_exact(inspector: httpx.Client, refusals: Refusals, name: str) -> None:
    """The download is the stored bytes (a too_large one's first 1024), as an attachment."""
    response = inspector.get(f"/console/rejections/{refusals.ids[name]}/raw")
    assert response.status_code == 200
    expected = refusals.raws[name][:1024] if name == "too_large" else refusals.raws[name]
    assert response.content == expected
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    prefix = "-prefix" if name == "too_large" else ""
    assert disposition == f'attachment; filename="rejection-{refusals.ids[name]}{prefix}.cbor"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_markup_is_shown_as_text(inspector: httpx.Client, refusals: Refusals) -> None:
    """Markup in a device id, a topic, a stored detail and a revocation reason is escaped."""
    escaped = html.escape(MARKUP, quote=False)
    pages = [
        _get(inspector, "/console/rejections").text,
        _get(inspector, f"/console/rejections/{refusals.ids['markup_topic']}").text,
        _get(inspector, f"/console/rejections/{refusals.ids['markup_device']}").text,
        _get(inspector, f"/console/rejections/devices/{ROGUE.name}").text,
    ]
    for page in pages:
        assert MARKUP not in page
        assert "<script>" not in page
        assert escaped in page or html.escape(MARKUP) in page
    detail = pages[1]
    assert f'id="topic">agritrace/v1/devices/{escaped}/up<' in detail
    assert escaped in re.search(r'id="stored-detail">([^<]*)<', detail).group(1)  # type: ignore[union-attr]
    assert f'id="topic">agritrace/v1/devices/{escaped}/up<' in pages[2]
    assert f"stolen {escaped}" in pages[3]


@pytest.mark.parametrize(
    "path",
    [
        "/console/rejections/99999",
        "/console/rejections/0",
        "/console/rejections/abc",
        "/console/rejections/99999/raw",
        "/console/rejections/devices/no-such-device",
    ],
)
def test_unknown_ids_are_404(inspector: httpx.Client, path: str) -> None:
    """An id no rejection has (or no id at all) and a device nobody knows are 404 pages."""
    response = inspector.get(path, params={"lang": "en"})
    assert response.status_code == 404
    assert "No such record, or not one you may see." in response.text
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "path",
    [
        "/console/rejections",
        "/console/rejections/1",
        "/console/rejections/1/raw",
        f"/console/rejections/devices/{CLIMATE.name}",
    ],
)
def test_without_a_session_it_is_the_sign_in_page(console_world: Any, path: str) -> None:
    """No session: a redirect to sign in, coming back to the page afterwards; no data."""
    response = httpx.get(f"{console_world.base}{path}", timeout=30)
    assert response.status_code == 303
    assert response.headers["location"] == (
        f"/console/sign-in?ended=required&next={path.replace('/', '%2F')}"
    )
    assert response.content == b""


def test_a_device_page(inspector: httpx.Client, refusals: Refusals) -> None:
    """The rogue device: its party, its key revoked (with the reason), its last message, its
    refusals by reason and its gap."""
    page = _get(inspector, f"/console/rejections/devices/{ROGUE.name}").text
    assert f'Linxia Hens <span class="mono small">{FARM}</span>' in page
    keys = table_rows(page, "keys-table")
    assert keys[1][0] == hashlib.sha256(ROGUE.public_key).digest()[:8].hex()
    assert keys[1][1] == "revoked"
    assert table_rows(page, "device-reasons")[1:] == [["Revoked key", "1", "1"]]
    assert 'id="gap-ranges">2–4<' in page
    assert "3 sequence numbers missing" in page
    assert 'id="last-message"><time' in page
    assert f"/console/rejections/{refusals.ids['revoked_key']}?lang=en" in page


def test_an_unregistered_device_has_a_page_of_its_refusals(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """A device nobody registered but which sent messages: its refusals, no keys."""
    page = _get(inspector, f"/console/rejections/devices/{GHOST.name}").text
    assert 'id="unregistered"' in page
    assert table_rows(page, "device-reasons")[1:] == [["Unknown device", "1", "1"]]
    assert f"/console/rejections/{refusals.ids['unknown_device']}?lang=en" in page
    assert 'id="keys"' not in page


def test_the_admin_sees_the_same(console_world: Any, refusals: Refusals) -> None:
    """The admin's console shows the same counts."""
    with console_world.client("admin") as admin:
        assert _footer(_get(admin, "/console/rejections").text) == dict(refusals.messages)


def test_a_party_reader_sees_its_own_devices_only(console_world: Any, refusals: Refusals) -> None:
    """The queries a party's console will use: its devices' refusals, never others', never
    those of no registered device."""
    assert reader_party(ConsoleUser(1, "inspector", "gansu-amr", 1, "x", 0)) is None
    assert reader_party(ConsoleUser(1, "admin", None, None, "x", 0)) is None
    assert reader_party(ConsoleUser(1, "party", FARM, 2, "x", 0)) == FARM
    with session_scope(console_world.engine) as session:
        own = reason_totals(session, RejectionFilter(reader_party=FARM))
        other = reason_totals(session, RejectionFilter(reader_party="gansu-pack-01"))
        farm_listed = rejection_list(session, RejectionFilter(reader_party=FARM), limit=100)
        find_rejection(session, refusals.ids["bad_signature"], FARM)
        with pytest.raises(NotFound):
            find_rejection(session, refusals.ids["bad_signature"], "gansu-pack-01")
        with pytest.raises(NotFound):
            find_rejection(session, refusals.ids["unknown_device"], FARM)
        unregistered = reason_totals(session, RejectionFilter(reader_party=FARM, party=NO_PARTY))
    assert {reason.value for reason in own} == {
        "too_large",
        "malformed",
        "unknown_key",
        "revoked_key",
        "bad_signature",
    }
    assert other == {}
    assert unregistered == {}
    assert {row.party_id for row in farm_listed} == {FARM}


def test_pages_name_the_parties_they_show(
    console_world: Any, refusals: Refusals, app_client: Any
) -> None:
    """Each page notes the parties whose refusals or devices it shows, for the access trail."""
    noted: dict[str, frozenset[str]] = {}
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, sign_in_failures=100)
    app = create_app(
        config, console_world.engine, clock=lambda: refusals.now, log_vkey=LOG.verifier
    )

    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        noted[request.url.path] = noted_parties(request)
        return response

    with app_client(app) as client:
        form = client.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        token = console_world.world.tokens["inspector"]
        assert (
            client.post("/console/sign-in", data={"csrf": csrf, "token": token}).status_code == 303
        )
        paths = {
            "/console/rejections": None,
            f"/console/rejections/{refusals.ids['bad_signature']}": frozenset({FARM}),
            f"/console/rejections/{refusals.ids['bad_signature']}/raw": frozenset({FARM}),
            f"/console/rejections/{refusals.ids['unknown_device']}": frozenset(),
            f"/console/rejections/devices/{ROGUE.name}": frozenset({FARM}),
        }
        for path in paths:
            assert client.get(path).status_code == 200, path
    for path, expected in paths.items():
        if expected is not None:
            assert noted[path] == expected, path
    # The overview shows the farm's refusals and gaps; its unregistered ones belong to nobody.
    assert noted["/console/rejections"] == frozenset({FARM})


def test_every_reason_check_and_kind_has_words_in_both_languages() -> None:
    """The pages name every reason, check, check state and decoded kind in zh and en."""
    words = [
        *(f"reason.{reason.value}{end}" for reason in RejectReason for end in ("", ".explain")),
        *(f"check.{check.value}{end}" for check in CHECKS for end in ("", ".what")),
        *(f"state.{state}" for state in get_args(CheckState)),
        *(f"cbor.{kind}" for kind in KINDS),
    ]
    for lang in LANGUAGES:
        for word in words:
            assert text(lang, f"console.rejections.{word}"), (lang, word)


def test_the_pages_are_valid_html(
    inspector: httpx.Client, refusals: Refusals, vnu_jar: tuple[str, Path], tmp_path: Path
) -> None:
    """The Nu Html Checker finds no error and no warning in any of the section's pages."""
    paths = [
        "/console/rejections",
        f"/console/rejections?by=week&party={NO_PARTY}",
        *(f"/console/rejections/{refusals.ids[name]}" for name in refusals.ids),
        f"/console/rejections/devices/{ROGUE.name}",
        f"/console/rejections/devices/{GHOST.name}",
        "/console/rejections/99999",
    ]
    files = []
    for lang in LANGUAGES:
        for n, path in enumerate(paths):
            response = inspector.get(path, params={"lang": lang})
            assert response.headers["content-type"].startswith("text/html"), path
            page = tmp_path / f"page-{n}-{lang}.html"
            page.write_bytes(response.content)
            files.append(str(page))
    problems = html_problems(vnu_jar, files)
    assert not problems, f"{len(problems)} HTML problem(s):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "params",
    [
        {"to": "9999-12-31"},
        {"from": "0001-01-01"},
        {"from": "garbage", "to": "2026-13-45", "by": "month", "reason": "nope"},
        {"before": "abc"},
        {"before": "0"},
        {"party": "<b>x</b>", "device": "<i>y</i>"},
    ],
)
def test_odd_filters_fall_back_to_defaults(
    inspector: httpx.Client, refusals: Refusals, params: dict[str, str]
) -> None:
    """A malformed or out-of-range filter value is ignored (or matches nothing), never an
    error; markup in one is shown as text."""
    page = _get(inspector, "/console/rejections", **params).text
    if "party" in params:
        assert "No message was refused in this range." in page
        assert 'value="&lt;i&gt;y&lt;/i&gt;"' in page
    else:
        assert _footer(page) == dict(refusals.messages)
        assert len(table_rows(page, "reason-table")) == 30 + 2


def test_dates_in_either_order_and_a_too_long_range(
    inspector: httpx.Client, refusals: Refusals
) -> None:
    """from after to is read the other way round; a range over 366 days keeps its end."""
    today = cst_day(refusals.now)
    week_ago = (today - timedelta(days=7)).isoformat()
    swapped = _get(inspector, "/console/rejections", **{"from": today.isoformat(), "to": week_ago})
    assert f"{week_ago} to {today.isoformat()} (China Standard Time)" in swapped.text
    long = _get(inspector, "/console/rejections", **{"from": "2020-01-01"}).text
    start = (today - timedelta(days=365)).isoformat()
    assert f"{start} to {today.isoformat()} (China Standard Time)" in long
    assert "One page counts at most 366 days" in long


@pytest.mark.parametrize("number", ["2147483648", "999999999999999999"])
def test_ids_beyond_the_database_integer_are_404(inspector: httpx.Client, number: str) -> None:
    """An id no 32-bit INTEGER holds is simply not found (PostgreSQL would refuse the query)."""
    assert inspector.get(f"/console/rejections/{number}").status_code == 404
    assert inspector.get("/console/rejections", params={"before": number}).status_code == 200
