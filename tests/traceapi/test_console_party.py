"""The producer console (docs/farms.md): devices, complaints and answers, credit, tokens.

Over the pages world of console_world with rejection_kit's refusals (a farm device with a gap
and a revoked key): each page shows the signed-in party's own data only, answers and tokens go
through their CSRF-checked forms, and markup in complaints and answers stays text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from markupsafe import escape
from rejection_kit import ROGUE, Refusals, add_refusals
from sqlalchemy import func
from sqlmodel import col, select
from trace_kit import CLIMATE, COLLECT, EGG_LOT, FARM, PACKER, TREATED_STEER

from tracecore.errors import Conflict, NotFound, RejectReason
from tracecore.storage import session_scope
from tracecore.storage.models import (
    AccessRecord,
    ComplaintAnswer,
    Device,
    Feedback,
    Product,
    Receipt,
    Token,
)
from tracecore.storage.producer import answer_complaint, last_receipts
from tracecore.storage.queries import device_gaps
from tracecore.storage.rejections import RejectionFilter, reason_totals

COMPLAINT = "<script>alert('x')</script> 蛋壳有裂纹 & 有异味"
ANSWER = "<b>抱歉</b> & 已经更换了包装线的传送带。"


@pytest.fixture(scope="module")
def refusals(console_world: Any) -> Refusals:
    """rejection_kit's refused messages, added once for the module."""
    return add_refusals(console_world.world)


@pytest.fixture(scope="module")
def farm(console_world: Any, refusals: Refusals) -> Iterator[httpx.Client]:
    """The farm's console session."""
    del refusals
    with console_world.client("farm") as client:
        yield client


@pytest.fixture(scope="module")
def packer(console_world: Any) -> Iterator[httpx.Client]:
    """The packer's console session."""
    with console_world.client("packer") as client:
        yield client


@pytest.fixture(scope="module")
def inspector(console_world: Any) -> Iterator[httpx.Client]:
    """The inspector's console session."""
    with console_world.client("inspector") as client:
        yield client


def _other_product(engine: Any) -> str:
    with session_scope(engine) as session:
        key = session.exec(select(Product.key).where(Product.owner_party_id != FARM)).first()
    assert key is not None
    return key


def _complain(console_world: Any, key: str, text: str) -> int:
    """A buyer's complaint on ``key`` through the public API; its feedback id."""
    sent = console_world.world.client.post(
        f"/v1/feedback/{key}", json={"rating": 1, "complaint": text}
    )
    assert sent.status_code == 201, sent.text
    with session_scope(console_world.engine) as session:
        newest = session.exec(select(func.max(Feedback.id))).one()
    return int(newest)


def _card(page: str, element_id: str) -> str:
    """The HTML of the card ``<li ... id=element_id>`` of a page (to its ``</li>`` line)."""
    found = re.search(
        rf'<li class="card[^"]*" id="{re.escape(element_id)}".*?\n *</li>\n', page, re.S
    )
    assert found, element_id
    return found.group(0)


# Devices


def test_the_farm_sees_its_devices_and_what_became_of_their_messages(
    farm: httpx.Client, console_world: Any
) -> None:
    """Each of the farm's devices: last message, last receipt, gaps, refusals, key state."""
    page = farm.get("/console/devices", params={"lang": "en"})
    assert page.status_code == 200
    with session_scope(console_world.engine) as session:
        own = session.exec(select(Device.id).where(Device.party_id == FARM)).all()
        others = session.exec(select(Device.id).where(Device.party_id != FARM)).all()
        receipts = last_receipts(session, own)
        rogue_gaps = device_gaps(session, ROGUE.name)
        rogue_refused = reason_totals(session, RejectionFilter(device=ROGUE.name))
        highest = session.exec(
            select(func.max(Receipt.seq)).where(Receipt.device_id == COLLECT.name)
        ).one()
    assert others
    for device in own:
        assert f'id="device-{device}"' in page.text
    for device in others:
        assert f'id="device-{device}"' not in page.text
    collect = _card(page.text, f"device-{COLLECT.name}")
    receipt = receipts[COLLECT.name]
    assert receipt.seq == highest
    assert f"seq {receipt.seq}" in collect
    assert f'href="/v1/log/entries/{receipt.log_index}"' in collect
    assert "none missing" in collect
    assert "valid (since" in collect
    rogue = _card(page.text, f"device-{ROGUE.name}")
    missing = sum(b - a + 1 for a, b in rogue_gaps)
    assert missing > 0
    assert f"{missing} missing" in rogue
    assert "revoked on" in rogue
    assert rogue_refused
    for reason in rogue_refused:
        link = f"/console/rejections?device={ROGUE.name}&amp;reason={reason.value}&amp;lang=en"
        assert link in rogue
    assert RejectReason.REVOKED_KEY in rogue_refused
    assert f'href="/console/rejections/devices/{ROGUE.name}?lang=en"' in rogue
    assert 'href="/console/devices/new?lang=en"' in page.text
    assert "Add a device" in page.text


def test_devices_of_another_party_stay_out_of_sight(
    packer: httpx.Client, inspector: httpx.Client, console_world: Any
) -> None:
    """The packer sees none of the farm's devices even when it asks; an inspector sees all and
    filters by party."""
    asked = packer.get("/console/devices", params={"party": FARM, "lang": "en"})
    assert asked.status_code == 200
    assert CLIMATE.name not in asked.text
    every = inspector.get("/console/devices", params={"lang": "en"})
    with session_scope(console_world.engine) as session:
        devices = session.exec(select(Device.id, Device.party_id)).all()
    for device, _ in devices:
        assert f'id="device-{device}"' in every.text
    farm_only = inspector.get("/console/devices", params={"party": FARM, "lang": "en"})
    for device, owner in devices:
        assert (f'id="device-{device}"' in farm_only.text) == (owner == FARM)
    assert "/console/devices/new" not in every.text  # an inspector registers no device


# Complaints and answers


def test_an_answer_needs_the_forms_csrf_token(farm: httpx.Client, console_world: Any) -> None:
    """Without the CSRF token the answer is refused (403) and nothing is stored."""
    complaint = _complain(console_world, EGG_LOT.path, "没有 CSRF 的回复")
    refused = farm.post(f"/console/complaints/{complaint}/answer", data={"answer": "hello"})
    assert refused.status_code == 403
    forged = farm.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "hello", "csrf": "x" * 43}
    )
    assert forged.status_code == 403
    with session_scope(console_world.engine) as session:
        assert session.get(ComplaintAnswer, complaint) is None


def test_the_farm_answers_a_complaint_once_and_markup_stays_text(
    farm: httpx.Client, packer: httpx.Client, inspector: httpx.Client, console_world: Any
) -> None:
    """The owner answers; the answer is shown escaped to it and to inspectors; a second answer
    is refused and the first stays; another party can neither see nor answer it."""
    complaint = _complain(console_world, EGG_LOT.path, COMPLAINT)
    listed = farm.get("/console/complaints", params={"lang": "en"})
    card = _card(listed.text, f"complaint-{complaint}")
    assert str(escape(COMPLAINT)) in card
    assert "<script>" not in listed.text
    assert f'action="/console/complaints/{complaint}/answer"' in card
    assert packer.get("/console/complaints").text.count(f"complaint-{complaint}") == 0
    stolen = packer.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "mine", "csrf": packer.csrf}
    )
    assert stolen.status_code == 404
    empty = farm.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "  ", "csrf": farm.csrf}
    )
    assert empty.status_code == 422
    too_long = farm.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "长" * 2001, "csrf": farm.csrf}
    )
    assert too_long.status_code == 422
    assert "长" * 2001 not in too_long.text  # the draft comes back cut to what may be sent
    sent = farm.post(
        f"/console/complaints/{complaint}/answer",
        data={"answer": ANSWER, "csrf": farm.csrf, "lang": "en"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert sent.headers["location"].endswith(f"#complaint-{complaint}")
    shown = _card(
        farm.get("/console/complaints", params={"lang": "en"}).text, f"complaint-{complaint}"
    )
    assert str(escape(ANSWER)) in shown
    assert "<b>" not in shown
    assert "The seller replied" in shown
    assert "<form" not in shown
    again = farm.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "second", "csrf": farm.csrf}
    )
    assert again.status_code == 409
    with session_scope(console_world.engine) as session:
        stored = session.get(ComplaintAnswer, complaint)
        assert stored is not None
        assert stored.text == ANSWER
        assert stored.party_id == FARM
    with session_scope(console_world.engine) as session:
        trail = session.exec(
            select(AccessRecord).where(
                AccessRecord.action == "POST /console/complaints/{complaint_id}/answer",
                AccessRecord.target == f"/console/complaints/{complaint}/answer",
            )
        ).all()
    assert {(row.who, row.role) for row in trail} == {(FARM, "party")}  # on the access trail
    seen = inspector.get("/console/complaints", params={"lang": "en"})
    inspected = _card(seen.text, f"complaint-{complaint}")
    assert str(escape(ANSWER)) in inspected
    assert FARM in inspected
    by_inspector = inspector.post(
        f"/console/complaints/{complaint}/answer", data={"answer": "x", "csrf": inspector.csrf}
    )
    assert by_inspector.status_code == 403


def test_complaints_on_other_parties_products_are_not_listed(
    farm: httpx.Client, inspector: httpx.Client, console_world: Any
) -> None:
    """A complaint on another party's product is on the inspector's page, not the farm's."""
    other = _complain(console_world, _other_product(console_world.engine), "别家的投诉")
    assert f"complaint-{other}" not in farm.get("/console/complaints").text
    assert f"complaint-{other}" in inspector.get("/console/complaints").text


def test_an_answer_of_2000_chinese_characters_goes_through(
    farm: httpx.Client, console_world: Any
) -> None:
    """The longest answer, in Chinese (18,000 bytes as a browser sends it), is stored whole."""
    complaint = _complain(console_world, EGG_LOT.path, "长回复")
    text = "谢" * 2000
    sent = farm.post(
        f"/console/complaints/{complaint}/answer",
        data={"answer": text, "csrf": farm.csrf},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    with session_scope(console_world.engine) as session:
        stored = session.get(ComplaintAnswer, complaint)
        assert stored is not None
        assert stored.text == text


def test_answer_complaint_refuses_strangers_and_second_answers(console_world: Any) -> None:
    """The storage rule itself: only the owner answers, once."""
    complaint = _complain(console_world, EGG_LOT.path, "存储层")
    with session_scope(console_world.engine) as session:
        with pytest.raises(NotFound):
            answer_complaint(session, complaint, PACKER, "not mine", 1)
        answer_complaint(session, complaint, FARM, "first", 2)
    with session_scope(console_world.engine) as session, pytest.raises(Conflict):
        answer_complaint(session, complaint, FARM, "second", 3)
    with session_scope(console_world.engine) as session:
        stored = session.get(ComplaintAnswer, complaint)
        assert stored is not None
        assert (stored.text, stored.at_ms) == ("first", 2)


# Credit


def _credit(console_world: Any, party: str) -> dict[str, Any]:
    """``GET /v1/parties/{party}/credit`` from the console's own server (the same clock)."""
    answer = httpx.get(
        f"{console_world.base}/v1/parties/{party}/credit",
        headers=console_world.world.auth("inspector"),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_the_farm_reads_its_own_credit_score(farm: httpx.Client, console_world: Any) -> None:
    """The farm's score is the API's; it cannot read another party's."""
    api = _credit(console_world, FARM)
    page = farm.get("/console/credit", params={"lang": "en"})
    assert page.status_code == 200
    assert f'id="score-value">{api["score"]} points<' in page.text
    assert farm.get("/console/credit", params={"party": PACKER}).status_code == 403


def test_each_deduction_links_what_caused_it(inspector: httpx.Client, console_world: Any) -> None:
    """The beef farm's deductions (a recall, failed checks) link their products and entries."""
    with session_scope(console_world.engine) as session:
        owner = session.exec(
            select(Product.owner_party_id).where(Product.key == TREATED_STEER.path)
        ).one()
    api = _credit(console_world, owner)
    assert {d["kind"] for d in api["deductions"]} >= {"recall", "failure"}
    page = inspector.get("/console/credit", params={"party": owner, "lang": "en"})
    assert page.status_code == 200
    assert f'id="score-value">{api["score"]} points<' in page.text
    assert page.text.count('class="card deduction"') == len(api["deductions"])
    for deduction in api["deductions"]:
        for key in deduction["products"]:
            assert f'href="/console/products/{key}?lang=en"' in page.text
        if deduction["entry"] is not None:
            assert f'href="/v1/log/entries/{deduction["entry"]}"' in page.text
    assert inspector.get("/console/credit", params={"party": "no-such-party"}).status_code == 404
    assert 'id="choose"' in inspector.get("/console/credit").text


# Tokens


def test_a_new_token_is_shown_once_then_listed_without_its_text(
    farm: httpx.Client, console_world: Any
) -> None:
    """Creating a token shows its text once; the list names it by id only; it works."""
    with session_scope(console_world.engine) as session:
        before = {t.id for t in _tokens(session, FARM)}
    created = farm.post("/console/tokens", data={"days": "30", "csrf": farm.csrf, "lang": "en"})
    assert created.status_code == 201
    text = re.search(
        r'id="new-token" type="text" readonly value="(at_[A-Za-z0-9_-]+)"', created.text
    )
    assert text, created.text
    token = text.group(1)
    assert "shown this once" in created.text
    with session_scope(console_world.engine) as session:
        (new,) = [t for t in _tokens(session, FARM) if t.id not in before]
    assert new.expires_ms - new.created_ms == 30 * 86_400_000
    listed = farm.get("/console/tokens", params={"lang": "en"})
    assert f'id="token-{new.id}"' in listed.text
    assert token not in listed.text
    works = console_world.world.client.get(
        "/v1/tokens", headers={"Authorization": f"Bearer {token}"}
    )
    assert works.status_code == 200
    for days in ("0", "366", "x", ""):
        bad = farm.post("/console/tokens", data={"days": days, "csrf": farm.csrf})
        assert bad.status_code == 422
    assert farm.post("/console/tokens", data={"days": "30"}).status_code == 403


def test_revoking_a_token_and_nobody_elses(
    farm: httpx.Client, packer: httpx.Client, console_world: Any
) -> None:
    """The packer cannot revoke the farm's token (404, nothing revoked); the farm can."""
    created = farm.post("/console/tokens", data={"days": "7", "csrf": farm.csrf})
    token = re.search(r'value="(at_[A-Za-z0-9_-]+)"', created.text)
    assert token
    with session_scope(console_world.engine) as session:
        new = max(t.id for t in _tokens(session, FARM))
    assert f'id="token-{new}"' not in packer.get("/console/tokens").text
    stolen = packer.post(f"/console/tokens/{new}/revoke", data={"csrf": packer.csrf})
    assert stolen.status_code == 404
    assert farm.post(f"/console/tokens/{new}/revoke", data={}).status_code == 403
    with session_scope(console_world.engine) as session:
        assert _token(session, new).revoked_ms is None
    done = farm.post(
        f"/console/tokens/{new}/revoke",
        data={"csrf": farm.csrf, "lang": "en"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    confirmed = farm.get(done.headers["location"])
    assert f"Token {new} is revoked." in confirmed.text
    assert 'data-state="revoked"' in _card(confirmed.text, f"token-{new}")
    refused = console_world.world.client.get(
        "/v1/tokens", headers={"Authorization": f"Bearer {token.group(1)}"}
    )
    assert refused.status_code == 401
    assert farm.get("/console/tokens").status_code == 200  # the farm's own session goes on


def test_an_inspector_sees_its_own_token_only(inspector: httpx.Client, console_world: Any) -> None:
    """The inspector's page lists the one token it signed in with, and offers no new one."""
    page = inspector.get("/console/tokens", params={"lang": "en"})
    assert page.status_code == 200
    assert len(re.findall(r'<li class="card" id="token-', page.text)) == 1
    assert "this session" in page.text
    assert 'action="/console/tokens"' not in page.text
    with session_scope(console_world.engine) as session:
        farm_token = min(t.id for t in _tokens(session, FARM))
    refused = inspector.post(f"/console/tokens/{farm_token}/revoke", data={"csrf": inspector.csrf})
    assert refused.status_code == 404


def _tokens(session: Any, party: str) -> list[Token]:
    return list(session.exec(select(Token).where(col(Token.party_id) == party)).all())


def _token(session: Any, token_id: int) -> Token:
    found = session.get(Token, token_id)
    assert found is not None
    return found
