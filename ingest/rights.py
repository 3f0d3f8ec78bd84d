"""Product rights of device messages: the pure rules of issue 3 §3, no I/O and no clock.

A message is judged against the current state of every product it names (as ``products`` or
as ``parents``) and the party of the device that signed it:

* **commissioning** creates its products: none of them may exist yet; the device's party then
  owns *and* holds them. A product pre-registered through the API (a ``products`` row without a
  commissioning entry) may be commissioned by its owner only.
* **receiving** moves custody: the device's party must be the ``pending`` party named by the
  holder's earlier ``shipping`` event; it becomes the holder and the pending party is cleared.
  A receiving by anyone else is refused.
* **shipping** by the holder may name ``data.destination``: a registered party id, which
  becomes the pending party of every product of the message.
* every other event and every reading **appends**: the device's party must hold each product.
* **parents** (aggregation, transformation): the party must hold every parent; on acceptance
  each product gets a lineage edge to each parent.

* **one item, one key**: GS1 identifies a serialized item by GTIN + serial alone (GS1 General
  Specifications §3.5.2; the lot is not part of it, §3.4.1), so a message may name a serialized
  item only by the key it was registered under: naming ``01/{gtin}/10/L2/21/C7`` or
  ``01/{gtin}/21/C7`` when ``01/{gtin}/10/L1/21/C7`` exists (or two keys of one item in one
  message) is a ``serial_conflict``. A commissioning cannot create a second product of an item.

A message naming several products needs rights on all of them. The order of the verdicts
follows design.md, "Ingest rules": ``unauthorized_product`` is decided before parking, so a
message that names one product it may not touch and one that does not exist yet is refused
rather than parked; then ``serial_conflict``; a message that breaks no rule but names a product
not yet commissioned (as product or parent) is parked until the commissioning arrives.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from enum import Enum

from tracecore.identifiers import ProductKey
from tracecore.message import DeviceMessage, Event

__all__ = [
    "COMMISSIONING",
    "RECEIVING",
    "SHIPPING",
    "Decision",
    "Outcome",
    "ProductState",
    "decide",
]

COMMISSIONING = "commissioning"
SHIPPING = "shipping"
RECEIVING = "receiving"


@dataclass(frozen=True, slots=True)
class ProductState:
    """What the rights rules need to know about a product that has a ``products`` row.

    ``commissioned`` is false for a product registered through the API whose commissioning
    event has not arrived yet: it does not exist for appends (messages about it are parked).
    """

    owner: str
    holder: str | None
    pending: str | None
    commissioned: bool = True


class Outcome(Enum):
    """The verdict of :func:`decide`."""

    ACCEPT = "accept"
    UNAUTHORIZED = "unauthorized_product"
    SERIAL_CONFLICT = "serial_conflict"
    PARK = "park"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one message and, when accepted, its effect on the products.

    ``missing`` (PARK) lists the product keys not yet commissioned, in message order;
    ``created`` (ACCEPT) the products a commissioning creates; ``edges`` the lineage edges
    ``(product, parent)`` to record; ``custody`` the new ``(product, holder, pending)`` of
    existing products whose custody changes. ``detail`` explains an UNAUTHORIZED or
    SERIAL_CONFLICT verdict.
    """

    outcome: Outcome
    detail: str = ""
    missing: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    edges: tuple[tuple[str, str], ...] = ()
    custody: tuple[tuple[str, str, str | None], ...] = ()


def _holder(state: ProductState) -> str:
    """The party holding a product (the owner, for rows written before custody existed)."""
    return state.holder if state.holder is not None else state.owner


def _describe(key: str, state: ProductState) -> str:
    holder = _holder(state)
    if holder == state.owner:
        return f"{key!r} (owned and held by {state.owner!r})"
    return f"{key!r} (owned by {state.owner!r}, held by {holder!r})"


def _destination(message: Event) -> object:
    return None if message.data is None else message.data.get("destination")


def _judge_product(
    key: str, state: ProductState | None, step: str | None, party: str, verdict: _Verdict
) -> None:
    """Judge one product of the message (not a parent) and note the result in ``verdict``."""
    if step == COMMISSIONING:
        # A product is created only by a commissioning of a party's device (issue 3 §3).
        if state is None:
            verdict.created.append(key)
        elif state.commissioned:
            verdict.refusals.append(
                f"commissioning {key!r}: the product exists already, owned by {state.owner!r}"
            )
        elif state.owner != party:
            verdict.refusals.append(
                f"commissioning {key!r}: the product is registered to {state.owner!r}, "
                f"not to {party!r}"
            )
        else:
            verdict.created.append(key)
    elif state is None or not state.commissioned:
        verdict.missing.append(key)
    elif step == RECEIVING:
        # Custody passes to the party a holder's shipping named, by that party's receiving.
        if state.pending != party:
            shipped = (
                f"shipped to {state.pending!r}"
                if state.pending is not None
                else "not shipped to anyone"
            )
            verdict.refusals.append(
                f"receiving {key!r}: party {party!r} is not the destination of its shipping; "
                f"it is {shipped}, held by {_holder(state)!r}"
            )
        else:
            verdict.custody.append((key, party, None))
    elif _holder(state) != party:
        # Appending (readings and every other event) needs custody.
        verdict.refusals.append(f"party {party!r} does not hold product {_describe(key, state)}")


def _serial_conflicts(named: list[ProductKey], items: Mapping[str, Collection[str]]) -> list[str]:
    """What breaks "one item, one key" among the keys a message names (products, then parents).

    ``items`` maps an item (``01/{gtin}/21/{serial}``) to the keys of the products registered
    with it: one, or several stored before the rule (migration 0008), each still valid itself.
    """
    conflicts: list[str] = []
    named_as: dict[str, str] = {}
    for key in named:
        item = key.item
        if item is None:
            continue
        earlier = named_as.setdefault(item.path, key.path)
        if earlier != key.path:
            conflicts.append(
                f"{key.path!r} and {earlier!r} are one item (GTIN + serial {item.path!r}): "
                "the lot does not tell items apart"
            )
            continue
        registered = items.get(item.path, ())
        if registered and key.path not in registered:
            conflicts.append(
                f"{key.path!r}: GTIN + serial {item.path!r} is already registered as "
                f"{', '.join(repr(k) for k in sorted(registered))}"
            )
    return conflicts


@dataclass(slots=True)
class _Verdict:
    refusals: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    custody: list[tuple[str, str, str | None]] = field(default_factory=list)


#: The decision on a plain append: accepted, nothing created, no edges, no custody change.
_APPEND = Decision(Outcome.ACCEPT)


def _plain_append(
    message: DeviceMessage, party: str, products: Mapping[str, ProductState | None]
) -> bool:
    """Whether a message that is not an event is certainly accepted as a plain append.

    The common case of ingest, decided without the general rules below, to the same verdict:
    each product is commissioned and held by ``party`` (no refusal, nothing missing), and none
    is serialized (no serial conflict is possible). Anything else takes the general rules.
    """
    for key in message.products:
        state = products.get(key.path)
        if state is None or not state.commissioned or key.serial is not None:
            return False
        if (state.holder if state.holder is not None else state.owner) != party:
            return False
    return True


def decide(
    message: DeviceMessage,
    party: str,
    products: Mapping[str, ProductState | None],
    parties: Container[str],
    items: Mapping[str, Collection[str]],
) -> Decision:
    """Judge the product rights of ``message`` signed by a device of ``party``.

    ``products`` maps every key the message names (products and parents) to its state, or to
    ``None`` when there is no ``products`` row (absent keys count as ``None``); ``parties``
    holds the registered party ids (at least every ``data.destination`` of the message);
    ``items`` maps the item (``01/{gtin}/21/{serial}``, :attr:`ProductKey.item`) of every
    serialized key the message names to the keys of the products registered with that item
    (absent: none).
    Returns the :class:`Decision`; never raises for a well-formed message.
    """
    if not isinstance(message, Event) and _plain_append(message, party, products):
        return _APPEND
    return _decide_by_the_rules(message, party, products, parties, items)


def _decide_by_the_rules(
    message: DeviceMessage,
    party: str,
    products: Mapping[str, ProductState | None],
    parties: Container[str],
    items: Mapping[str, Collection[str]],
) -> Decision:
    """:func:`decide` by the general rules, for any message."""
    event = message if isinstance(message, Event) else None
    keys = [key.path for key in message.products]
    step = event.step if event is not None else None
    parent_keys = [key.path for key in event.parents] if event is not None else []
    verdict = _Verdict()
    for key in keys:
        _judge_product(key, products.get(key), step, party, verdict)
    # Transformation/aggregation only from products the party holds (issue 3 §3).
    for key in parent_keys:
        state = products.get(key)
        if state is None or not state.commissioned:
            verdict.missing.append(key)
        elif _holder(state) != party:
            verdict.refusals.append(f"party {party!r} does not hold parent {_describe(key, state)}")
    if event is not None and step == SHIPPING and not verdict.refusals:
        # Custody: a shipping by the holder naming a registered party makes it pending.
        destination = _destination(event)
        if destination is not None:
            if not isinstance(destination, str) or destination not in parties:
                verdict.refusals.append(
                    f"shipping: data.destination {destination!r} is not a registered party"
                )
            else:
                verdict.custody = [
                    (key, party, destination) for key in keys if key not in verdict.missing
                ]
    # design.md order: unauthorized_product is decided before parking (unknown_product).
    if verdict.refusals:
        return Decision(Outcome.UNAUTHORIZED, detail="; ".join(verdict.refusals))
    named = [*message.products, *(event.parents if event is not None else ())]
    conflicts = _serial_conflicts(named, items)
    if conflicts:
        return Decision(Outcome.SERIAL_CONFLICT, detail="; ".join(conflicts))
    if verdict.missing:
        return Decision(Outcome.PARK, missing=tuple(verdict.missing))
    return Decision(
        Outcome.ACCEPT,
        created=tuple(verdict.created),
        edges=tuple((key, parent) for key in keys for parent in parent_keys),
        custody=tuple(verdict.custody),
    )
