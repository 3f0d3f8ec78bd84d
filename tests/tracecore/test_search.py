"""Product and party searches (tracecore.storage.search) over the pages world, on both databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col
from trace_kit import (
    ABATTOIR,
    BEEF_FARM,
    CARCASS,
    CUTS,
    EGG_CASE,
    EGG_CASE_2,
    EGG_LOT,
    FARM,
    LOG,
    RECALLED_CUTS,
    STEER,
    T0,
    TAMPERED_CASE,
    TREATED_CARCASS,
    TREATED_STEER,
    World,
    make_pages_world,
)

from tracecore.bundle import Policy
from tracecore.identifiers import ProductKey
from tracecore.storage import ChainLink, LogEntry, Product, session_scope
from tracecore.storage.models import ContractResult, ProductParent
from tracecore.storage.search import (
    PartyQuery,
    ProductQuery,
    count_products,
    matching_products,
    search_parties,
    search_products,
)
from tracecore.storage.trace import assess_product

HOUR_MS = 3_600_000


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The pages world on the test database (SQLite or PostgreSQL)."""
    with make_pages_world(engine, app_client) as built:
        yield built


def _keys(engine: Engine, query: ProductQuery) -> list[str]:
    with session_scope(engine) as session:
        return [row.key for row in search_products(session, query).rows]


def _all(engine: Engine) -> list[Product]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Product)).all())


def test_every_filter_narrows_to_exactly_its_products(world: World) -> None:
    """Owner, step, place, times, contract and status each keep exactly the matching products."""
    engine = world.engine
    everything = _all(engine)
    big = dataclasses.replace(ProductQuery(), limit=1000)
    assert sorted(_keys(engine, big)) == sorted(p.key for p in everything)

    owned = _keys(engine, dataclasses.replace(big, owner=ABATTOIR))
    assert sorted(owned) == sorted(p.key for p in everything if p.owner_party_id == ABATTOIR)
    assert CUTS.path in owned
    assert CARCASS.path in owned

    with session_scope(engine) as session:
        killed = set(
            session.scalars(
                select(col(ChainLink.product_key))
                .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
                .where(col(LogEntry.step) == "killing")
            ).all()
        )
    assert killed == {STEER.path, TREATED_STEER.path}
    assert set(_keys(engine, dataclasses.replace(big, step="killing"))) == killed

    # The meat case of the shop (a device place) and the shop's town (its party's place).
    meat_case = set(_keys(engine, dataclasses.replace(big, place="鲜肉冷柜")))
    assert meat_case == {CUTS.path, RECALLED_CUTS.path}
    assert set(_keys(engine, dataclasses.replace(big, place="MEAT display"))) == meat_case
    wuwei = set(_keys(engine, dataclasses.replace(big, place="wuwei")))
    assert TREATED_STEER.path in wuwei
    assert EGG_CASE.path not in wuwei
    assert _keys(engine, dataclasses.replace(big, place="%")) == []  # a LIKE wildcard is text

    # Step and place on one record: the egg cases were shipped from the farm's packing site and
    # from the truck; only the farm's cold store is in Linxia.
    shipped_in_linxia = set(
        _keys(engine, dataclasses.replace(big, step="shipping", place="Linxia"))
    )
    assert shipped_in_linxia == {EGG_CASE.path, EGG_CASE_2.path}

    created = sorted(p.created_ms for p in everything)
    middle = created[len(created) // 2]
    later = _keys(engine, dataclasses.replace(big, start_ms=middle))
    assert sorted(later) == sorted(p.key for p in everything if p.created_ms >= middle)
    earlier = _keys(engine, dataclasses.replace(big, end_ms=middle))
    assert sorted(earlier) == sorted(p.key for p in everything if p.created_ms < middle)
    assert _keys(engine, dataclasses.replace(big, step="killing", end_ms=T0)) == []

    with session_scope(engine) as session:
        results = session.scalars(select(ContractResult)).all()
        failed = {r.product_key for r in results if r.status == "fail"}
        cold = {
            r.product_key for r in results if r.contract == "egg-cold-chain" and r.status == "pass"
        }
    assert failed
    assert set(_keys(engine, dataclasses.replace(big, status="fail"))) == failed
    query = dataclasses.replace(big, contract="egg-cold-chain", status="pass")
    assert set(_keys(engine, query)) == cold
    assert EGG_CASE.path in cold
    with session_scope(engine) as session:
        assert count_products(session, dataclasses.replace(big, status="fail")) == len(failed)


def test_recalled_is_the_scan_verdicts_recalled(world: World) -> None:
    """A product is recalled in a search exactly when its scan's story holds a recall."""
    engine = world.engine
    big = ProductQuery(limit=1000)
    with session_scope(engine) as session:
        rows = search_products(session, big).rows
        by_scan = {}
        for row in rows:
            assessment = assess_product(session, ProductKey.parse(row.key), Policy(LOG.verifier))
            assert assessment is not None
            story = assessment.story
            by_scan[row.key] = story is not None and bool(story.recalls)
    flagged = {row.key: row.recalled for row in rows}
    assert flagged == by_scan
    recalled = {key for key, value in flagged.items() if value}
    assert {TREATED_STEER.path, TREATED_CARCASS.path, RECALLED_CUTS.path} <= recalled
    assert CUTS.path not in recalled
    assert set(_keys(engine, dataclasses.replace(big, recalled=True))) == recalled
    assert set(_keys(engine, dataclasses.replace(big, recalled=False))) == set(flagged) - recalled


def test_recalls_reach_every_descendant_and_wait_for_a_checkpoint(world: World) -> None:
    """A recall of a flock reaches its lots and cases, from the next checkpoint on."""
    engine = world.engine
    with session_scope(engine) as session:
        flock = session.scalars(
            select(col(ProductParent.parent_key)).where(
                col(ProductParent.product_key) == EGG_LOT.path
            )
        ).one()
    reply = world.client.post(
        "/v1/recalls",
        json={"product": flock, "reason": "avian influenza on the farm"},
        headers=world.auth("inspector"),
    )
    assert reply.status_code == 201, reply.text
    query = ProductQuery(recalled=True, limit=1000)
    assert EGG_CASE.path not in _keys(engine, query)  # as for a scan: not before a checkpoint
    world.checkpoint()
    recalled = set(_keys(engine, query))
    assert {flock, EGG_LOT.path, EGG_CASE.path, EGG_CASE_2.path, TAMPERED_CASE.path} <= recalled


def test_sorts_both_ways_and_pages_without_overlap(world: World) -> None:
    """Each sort column orders the rows both ways (ties by key); pages cover all, once."""
    engine = world.engine
    products = _all(engine)
    expected = {
        "key": lambda p: (p.key,),
        "owner": lambda p: (p.owner_party_id, p.key),
        "created": lambda p: (p.created_ms, p.key),
    }
    for sort, order in expected.items():
        ascending = _keys(engine, ProductQuery(sort=sort, limit=1000))
        assert ascending == [p.key for p in sorted(products, key=order)], sort
        descending = _keys(engine, ProductQuery(sort=sort, descending=True, limit=1000))
        assert descending == [p.key for p in sorted(products, key=order, reverse=True)], sort
    held = _keys(engine, ProductQuery(sort="holder", limit=1000))
    holders = [(p.holder_party_id, p.key) for p in products if p.holder_party_id is not None]
    assert held[: len(holders)] == [key for _, key in sorted(holders)]
    assert set(held[len(holders) :]) == {p.key for p in products if p.holder_party_id is None}
    size = 4
    seen: list[str] = []
    with session_scope(engine) as session:
        for number in range(100):
            page = search_products(
                session, ProductQuery(sort="owner", offset=number * size, limit=size)
            )
            seen += [row.key for row in page.rows]
            if not page.has_next:
                break
    assert seen == _keys(engine, ProductQuery(sort="owner", limit=1000))
    with session_scope(engine) as session:
        first = matching_products(session, ProductQuery(sort="key", descending=True), 3)
    by_key = sorted(products, key=lambda p: p.key, reverse=True)
    assert first == [(p.key, p.owner_party_id) for p in by_key[:3]]


def test_rows_carry_names_holders_and_failures(world: World) -> None:
    """A row names the owner and holder and counts failed contract results."""
    with session_scope(world.engine) as session:
        (row,) = search_products(session, ProductQuery(owner=FARM, step="retail_selling")).rows
        failures = len(
            session.scalars(
                select(ContractResult).where(
                    col(ContractResult.product_key) == RECALLED_CUTS.path,
                    col(ContractResult.status) == "fail",
                )
            ).all()
        )
        (cut,) = search_products(
            session,
            ProductQuery(owner=ABATTOIR, step="commissioning", place="分割间", recalled=True),
        ).rows
    assert row.key == EGG_CASE.path
    assert (row.owner, row.owner_name, row.owner_name_en) == (FARM, "临夏蛋鸡场", "Linxia Hens")
    assert row.holder is not None
    assert row.holder_name is not None
    assert not row.recalled
    assert cut.key == RECALLED_CUTS.path
    assert cut.failures == failures
    assert failures >= 1


def test_bad_queries_are_refused() -> None:
    """A query with an unknown step, sort or status, or a bad page, cannot be made."""
    for bad in ({"step": "flying"}, {"sort": "price"}, {"status": "maybe"}, {"limit": 0}):
        with pytest.raises(ValueError, match=r"."):
            ProductQuery(**bad)
    with pytest.raises(ValueError, match="offset"):
        PartyQuery(offset=-1)


def test_parties_by_part_of_a_name_in_either_language(world: World) -> None:
    """Party search matches Chinese and English names and ids, case-insensitively, by id."""
    with session_scope(world.engine) as session:

        def ids(text: str | None, **page: int) -> list[str]:
            return [p.id for p in search_parties(session, PartyQuery(text, **page)).rows]

        assert ids("兰州") == sorted(["lanzhou-abattoir", "lanzhou-mart", "gansu-pack-01"])
        assert ids("WUWEI") == [BEEF_FARM]
        assert ids("cattle farm") == [BEEF_FARM]
        assert ids("hens-01") == [FARM]
        assert ids("_") == []  # a LIKE wildcard is text
        everyone = ids(None, limit=1000)
        assert everyone == sorted(everyone)
        assert ids(None, limit=3) + ids(None, offset=3, limit=1000) == everyone
        assert search_parties(session, PartyQuery(limit=3)).has_next
        assert not search_parties(session, PartyQuery(limit=1000)).has_next
