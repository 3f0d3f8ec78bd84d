"""Finding the product a scanned code names, when GTIN + serial alone identifies an item.

GS1 identifies a serialized item by GTIN + serial (GS1 General Specifications §3.5.2); the lot
is an attribute, not part of the identity (§3.4.1). A code ``01/{gtin}/21/{serial}`` therefore
names the product registered as ``01/{gtin}/10/{lot}/21/{serial}`` and the other way round.
:func:`find_product` decides which registered product, if any, a scanned key names:

``exact``
    a product is registered under this very key;
``item``
    the key names the item of one product registered under another form: a code without a lot
    names the item whatever its lot, and a code with a lot names an item registered without
    one (the lot on the code is then not part of the record, and the answer says so);
``lot_mismatch``
    the key carries a lot, and the item is registered under another lot. A code printed with
    a wrong lot is not the genuine item's code: it never resolves to it, or a forger could lend
    any label the story of a real item by copying its serial;
``ambiguous``
    a code without a lot whose GTIN + serial several products share, registered before the
    rule (migration 0008): which one the code means cannot be told;
``none``
    no product has this key or its item.

docs/identifiers.md describes the rule for outsiders; docs/trace.md what a buyer sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy.orm import Session

from tracecore.errors import NotFound
from tracecore.identifiers import ProductKey
from tracecore.storage.rawsql import fetch_all

__all__ = ["Match", "ProductMatch", "find_product", "registered_product"]

# Through the primary key and the unique (item_key, item_rank) index: one probe either way.
_BY_KEY: Final = 'SELECT "key" FROM products WHERE "key" = ?'
_BY_ITEM: Final = 'SELECT "key" FROM products WHERE item_key = ? ORDER BY item_rank'


class Match(StrEnum):
    """How a scanned key relates to the registered products (see the module docstring)."""

    EXACT = "exact"
    ITEM = "item"
    LOT_MISMATCH = "lot_mismatch"
    AMBIGUOUS = "ambiguous"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ProductMatch:
    """The answer of :func:`find_product`: ``product`` is the registered key (EXACT, ITEM)."""

    scanned: ProductKey
    match: Match
    product: ProductKey | None = None
    detail: str = ""

    @property
    def found(self) -> bool:
        """True when the scanned key names one registered product."""
        return self.product is not None

    @property
    def unconfirmed_lot(self) -> str | None:
        """The lot the scanned code carries that the registered product's key does not."""
        if self.product is None or self.scanned.lot is None or self.product.lot is not None:
            return None
        return self.scanned.lot


def find_product(session: Session, key: ProductKey) -> ProductMatch:
    """Decide which registered product ``key`` names, if any (one indexed query).

    A lot key names only itself. A serialized key is looked up by its item (GTIN + serial):
    the product of this very key, else the one product of the item the key is compatible with.
    """
    item = key.item
    rows = (
        fetch_all(session, _BY_KEY, [key.path])
        if item is None
        else fetch_all(session, _BY_ITEM, [item.path])
    )
    registered = [ProductKey.parse_canonical(str(k)) for (k,) in rows]
    if key in registered:
        return ProductMatch(key, Match.EXACT, key)
    if not registered:  # (a lot key's only candidate is itself)
        return ProductMatch(key, Match.NONE, detail=f"{key.path} is not registered")
    # A code without a lot fits every product of the item; a code with a lot only one
    # registered without a lot (never a product of another lot).
    fitting = registered if key.lot is None else [k for k in registered if k.lot is None]
    if len(fitting) == 1:
        return ProductMatch(key, Match.ITEM, fitting[0])
    if not fitting:
        # The registered key is not named: the code's lot is wrong, and whoever printed it
        # should not learn the right one from the answer.
        return ProductMatch(
            key,
            Match.LOT_MISMATCH,
            detail=f"{key.path} is not registered: GTIN {key.gtin} serial {key.serial!r} is "
            f"registered in another lot than {key.lot!r}, so this code does not match the "
            "record (a misprinted or copied label)",
        )
    return ProductMatch(
        key,
        Match.AMBIGUOUS,
        detail=f"{key.path} names {len(fitting)} products registered with GTIN {key.gtin} and "
        f"serial {key.serial!r} before serials had to be unique: scan the full code with its lot",
    )


def registered_product(session: Session, key: ProductKey) -> ProductKey:
    """The registered product ``key`` names (:func:`find_product`), for exports and look-ups.

    Raises :class:`NotFound` with the reason when the key names none, or not unambiguously.
    """
    found = find_product(session, key)
    if found.product is None:
        raise NotFound(found.detail)
    return found.product
