"""Product rights (issue 3 §3): the pure rules, and custody and lineage through the processor."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_kit import World, product

from ingest.rights import Outcome, ProductState, _decide_by_the_rules, decide
from tracecore.cose import parse_message
from tracecore.errors import RejectReason
from tracecore.identifiers import ProductKey
from tracecore.message import Reading, Sensor

EGGS = product("EGG-1")
EGGS2 = product("EGG-2")
CARTON1 = product("C1", gtin="09506000134369")
CARTON2 = product("C2", gtin="09506000134369")
ANIMAL = product("ANIMAL-7", gtin="09506000134376")
CARCASS = product("K7", gtin="09506000134383")


def reasons(world: World) -> list[tuple[str, int, str]]:
    """Return (reason, seq, detail) of every stored rejection."""
    return [(r.reason, r.seq, r.detail) for r in world.rows("rejections", "id")]


def holder(world: World, key: str) -> tuple[str, str | None, str | None]:
    """Return (owner, holder, pending) of a product row."""
    [row] = [r for r in world.rows("products") if r.key == key]
    return row.owner_party_id, row.holder_party_id, row.pending_party_id


# -- pure rules --------------------------------------------------------------------------------

# Lots, and serialized keys of two items, each under two keys (with and without a lot).
_KEYS = [
    ProductKey("09506000134352", lot="L1"),
    ProductKey("09506000134352", lot="L2"),
    ProductKey("09506000134369", serial="S1"),
    ProductKey("09506000134369", lot="L1", serial="S1"),
    ProductKey("09506000134369", lot="L2", serial="S2"),
    ProductKey("09506000134369", serial="S2"),
]
_PARTIES = ["farm-a", "packer-b", "shop-c"]
_STATE = st.none() | st.builds(
    ProductState,
    owner=st.sampled_from(_PARTIES),
    holder=st.none() | st.sampled_from(_PARTIES),
    pending=st.none() | st.sampled_from(_PARTIES),
    commissioned=st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(
    named=st.lists(st.sampled_from(_KEYS), min_size=1, max_size=4, unique=True),
    party=st.sampled_from(_PARTIES),
    states=st.lists(_STATE, min_size=len(_KEYS), max_size=len(_KEYS)),
    registered=st.lists(st.sampled_from(_KEYS), max_size=3),
)
def test_decide_on_readings_agrees_with_the_general_rules(
    named: list[ProductKey],
    party: str,
    states: list[ProductState | None],
    registered: list[ProductKey],
) -> None:
    """decide's shortcut for plain appends gives the verdict of the general rules, always."""
    reading = Reading("dev-a", 1, 1, tuple(named), (Sensor("Temperature", 4.5, "CEL"),))
    products = {key.path: state for key, state in zip(_KEYS, states, strict=True)}
    items: dict[str, set[str]] = {}
    for key in registered:
        if key.item is not None:
            items.setdefault(key.item.path, set()).add(key.path)
    expected = _decide_by_the_rules(reading, party, products, set(_PARTIES), items)
    assert decide(reading, party, products, set(_PARTIES), items) == expected


def test_decide_plain_append_is_accepted_without_effects() -> None:
    """decide: a reading by the holder of commissioned lots is accepted, changing nothing."""
    reading = Reading("dev-a", 1, 1, tuple(_KEYS[:2]), (Sensor("Temperature", 4.5, "CEL"),))
    held = ProductState(owner="farm-a", holder="packer-b", pending=None)
    products = {_KEYS[0].path: held, _KEYS[1].path: held}
    decision = decide(reading, "packer-b", products, set(), {})
    assert decision.outcome is Outcome.ACCEPT
    assert (decision.created, decision.edges, decision.custody) == ((), (), ())
    assert decide(reading, "farm-a", products, set(), {}).outcome is Outcome.UNAUTHORIZED


def test_decide_commissioning_creates_unknown_products(world: World) -> None:
    """decide: a commissioning of new keys is accepted and creates them."""
    message = parse_message(world.devices["dev-a"].event("commissioning", EGGS)).message
    decision = decide(message, "farm-a", {}, set(), {})
    assert decision.outcome is Outcome.ACCEPT
    assert decision.created == (EGGS,)


def test_decide_refusal_wins_over_parking(world: World) -> None:
    """decide: a message naming a foreign product and an unknown one is refused, not parked."""
    message = parse_message(world.devices["dev-b"].reading(EGGS, EGGS2)).message
    states = {EGGS: ProductState(owner="farm-a", holder="farm-a", pending=None)}
    decision = decide(message, "packer-b", states, set(), {})
    assert decision.outcome is Outcome.UNAUTHORIZED
    assert "'packer-b' does not hold product" in decision.detail


def test_decide_parks_for_unknown_parent(world: World) -> None:
    """decide: a commissioning from a parent not yet commissioned is parked for the parent."""
    message = parse_message(
        world.devices["dev-b"].event("commissioning", CARTON1, parents=(EGGS,))
    ).message
    decision = decide(message, "packer-b", {}, set(), {})
    assert decision.outcome is Outcome.PARK
    assert decision.missing == (EGGS,)


def test_decide_holder_without_owner_column(world: World) -> None:
    """decide: a product row without holder counts as held by its owner."""
    message = parse_message(world.devices["dev-a"].reading(EGGS)).message
    states = {EGGS: ProductState(owner="farm-a", holder=None, pending=None)}
    assert decide(message, "farm-a", states, set(), {}).outcome is Outcome.ACCEPT
    assert decide(message, "shop-c", states, set(), {}).outcome is Outcome.UNAUTHORIZED


# -- through the processor ----------------------------------------------------------------------


def test_commissioning_an_existing_product_is_unauthorized(world: World) -> None:
    """Commissioning a product that exists is unauthorized_product naming its owner."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    world.send(dev_a, dev_a.event("commissioning", EGGS))
    raw = dev_b.event("commissioning", EGGS)
    result = world.send(dev_b, raw)
    assert result.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    [(reason, _, detail)] = reasons(world)
    assert reason == "unauthorized_product"
    assert "exists already, owned by 'farm-a'" in detail
    assert bytes(world.rows("rejections")[0].raw) == raw
    assert holder(world, EGGS) == ("farm-a", "farm-a", None)
    # The owner commissioning it again is refused too: a product is created once.
    assert world.send(dev_a, dev_a.event("commissioning", EGGS)).rejected


def test_custody_transfer(world: World) -> None:
    """Shipping to a party then its receiving moves custody; the old holder loses the right."""
    dev_a, dev_b, dev_c = (world.devices[d] for d in ("dev-a", "dev-b", "dev-c"))
    world.send(dev_a, dev_a.event("commissioning", EGGS))
    ship = world.send(dev_a, dev_a.event("shipping", EGGS, data={"destination": "packer-b"}))
    assert ship.accepted == 1
    assert holder(world, EGGS) == ("farm-a", "farm-a", "packer-b")
    # Before receiving, the destination may not append; the holder still may.
    assert world.send(dev_b, dev_b.reading(EGGS)).rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert world.send(dev_a, dev_a.reading(EGGS)).accepted == 1
    # A third party's receiving is refused.
    third = world.send(dev_c, dev_c.event("receiving", EGGS))
    assert third.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert "'shop-c' is not the destination" in reasons(world)[-1][2]
    assert "shipped to 'packer-b'" in reasons(world)[-1][2]
    # The destination's receiving makes it the holder.
    assert world.send(dev_b, dev_b.event("receiving", EGGS)).accepted == 1
    assert holder(world, EGGS) == ("farm-a", "packer-b", None)
    assert world.send(dev_b, dev_b.reading(EGGS)).accepted == 1
    old = world.send(dev_a, dev_a.reading(EGGS))
    assert old.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert "held by 'packer-b'" in reasons(world)[-1][2]
    # Receiving again without a new shipping is refused.
    assert world.send(dev_b, dev_b.event("receiving", EGGS)).rejected


def test_custody_transfer_within_one_batch(world: World) -> None:
    """Custody rules apply in arrival order inside one batch."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    batch = [
        dev_a.inbound(dev_a.event("commissioning", EGGS)),
        dev_a.inbound(dev_a.event("shipping", EGGS, data={"destination": "packer-b"})),
        dev_b.inbound(dev_b.event("receiving", EGGS)),
        dev_a.inbound(dev_a.reading(EGGS)),
        dev_b.inbound(dev_b.reading(EGGS)),
    ]
    result = world.process(*batch)
    assert result.accepted == 4
    assert result.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert reasons(world)[0][1] == 3  # dev-a's reading after the transfer
    assert holder(world, EGGS) == ("farm-a", "packer-b", None)


def test_shipping_to_unregistered_party_is_unauthorized(world: World) -> None:
    """A shipping whose destination is not a registered party is refused; custody unchanged."""
    dev_a = world.devices["dev-a"]
    world.send(dev_a, dev_a.event("commissioning", EGGS))
    result = world.send(dev_a, dev_a.event("shipping", EGGS, data={"destination": "nobody-x"}))
    assert result.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert "'nobody-x' is not a registered party" in reasons(world)[0][2]
    assert holder(world, EGGS) == ("farm-a", "farm-a", None)


def test_transformation_from_held_parent(world: World) -> None:
    """A carcass from a held animal gets a lineage edge; from a foreign one it is refused."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    world.send(dev_a, dev_a.event("commissioning", ANIMAL))
    refused = world.send(dev_b, dev_b.event("commissioning", CARCASS, parents=(ANIMAL,)))
    assert refused.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert "does not hold parent" in reasons(world)[0][2]
    assert world.count("products") == 1
    ok = world.send(dev_a, dev_a.event("commissioning", CARCASS, parents=(ANIMAL,)))
    assert ok.accepted == 1
    edges = [(r.product_key, r.parent_key) for r in world.rows("product_parents")]
    assert edges == [(CARCASS, ANIMAL)]
    assert holder(world, CARCASS) == ("farm-a", "farm-a", None)


def test_aggregation_cartons_from_received_lot(world: World) -> None:
    """A packer that received an egg lot commissions cartons from it: one edge per carton."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    world.send(dev_a, dev_a.event("commissioning", EGGS))
    world.send(dev_a, dev_a.event("shipping", EGGS, data={"destination": "packer-b"}))
    world.send(dev_b, dev_b.event("receiving", EGGS))
    result = world.send(dev_b, dev_b.event("commissioning", CARTON1, CARTON2, parents=(EGGS,)))
    assert result.accepted == 1
    edges = sorted((r.product_key, r.parent_key) for r in world.rows("product_parents"))
    assert edges == [(CARTON1, EGGS), (CARTON2, EGGS)]
    assert holder(world, CARTON1) == ("packer-b", "packer-b", None)
    # A packing event with parents again (aggregation) records no duplicate edge.
    again = world.send(dev_b, dev_b.event("packing", CARTON1, parents=(EGGS,)))
    assert again.accepted == 1
    assert world.count("product_parents") == 2


def test_parent_not_yet_commissioned_parks_then_applies(world: World) -> None:
    """A commissioning from an unknown parent waits; the parent's commissioning releases it."""
    dev_a = world.devices["dev-a"]
    child = world.send(dev_a, dev_a.event("commissioning", CARCASS, parents=(ANIMAL,), seq=2))
    assert child.parked == 1
    result = world.send(dev_a, dev_a.event("commissioning", ANIMAL, seq=1))
    assert (result.accepted, result.unparked) == (2, 1)
    assert [(r.product_key, r.parent_key) for r in world.rows("product_parents")] == [
        (CARCASS, ANIMAL)
    ]


def test_parked_message_refused_when_another_party_commissions(world: World) -> None:
    """A parked reading is refused, not applied, when another party commissions the product."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    raw = dev_a.reading(EGGS)
    world.send(dev_a, raw)
    result = world.send(dev_b, dev_b.event("commissioning", EGGS))
    assert result.accepted == 1
    assert result.unparked == 1
    assert result.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    [row] = world.rows("rejections")
    assert bytes(row.raw) == raw
    assert world.count("parked_messages") == 0


def test_message_waiting_for_two_products(world: World) -> None:
    """A reading about two unknown products waits for both commissionings."""
    dev_a = world.devices["dev-a"]
    world.send(dev_a, dev_a.reading(EGGS, EGGS2, seq=10))
    first = world.send(dev_a, dev_a.event("commissioning", EGGS, seq=1))
    assert (first.accepted, first.unparked) == (1, 0)
    assert [r.product_key for r in world.rows("parked_products")] == [EGGS2]
    second = world.send(dev_a, dev_a.event("commissioning", EGGS2, seq=2))
    assert (second.accepted, second.unparked) == (2, 1)
    assert world.count("parked_messages") == 0


def test_multi_product_message_needs_rights_on_all(world: World) -> None:
    """A reading about a held product and a foreign one is refused as a whole."""
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    world.send(dev_a, dev_a.event("commissioning", EGGS))
    world.send(dev_b, dev_b.event("commissioning", EGGS2))
    entries = world.count("log_entries")
    result = world.send(dev_a, dev_a.reading(EGGS, EGGS2))
    assert result.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    assert world.count("log_entries") == entries
