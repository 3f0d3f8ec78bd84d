"""Searches of the inspector API and the console: products by filters, parties by name.

:func:`search_products` answers one page of a :class:`ProductQuery` (filters, sort, page) with
what a result table shows of each product: owner and holder with their names, whether a scan
calls it recalled, and how many of its stored contract results failed. :func:`count_products`
and :func:`matching_products` answer the same filters for totals and exports;
:func:`search_parties` finds parties by a part of their name or id.

Each query is one SQLAlchemy statement, the same on SQLite and PostgreSQL; text sorts compare
bytes on both (PostgreSQL's default collation would sort ``a-c`` after ``ab``, SQLite never).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from sqlalchemy import ColumnElement, Select, case, false, func, or_, select
from sqlmodel import Session, SQLModel, col

from tracecore.checkpoint import latest_checkpoint
from tracecore.message import BUSINESS_STEPS
from tracecore.storage.evidence import named_in_recalls
from tracecore.storage.models import (
    ChainLink,
    ContractResult,
    Device,
    LogEntry,
    Party,
    Product,
    ProductParent,
)

__all__ = [
    "CONTRACT_STATUSES",
    "PRODUCT_SORTS",
    "ContractStatus",
    "PartyPage",
    "PartyQuery",
    "PartyRow",
    "ProductQuery",
    "ProductSort",
    "SearchPage",
    "SearchRow",
    "count_products",
    "matching_products",
    "search_parties",
    "search_products",
]

ProductSort = Literal["key", "owner", "created", "holder"]
#: The columns a product search sorts by.
PRODUCT_SORTS: Final[tuple[ProductSort, ...]] = get_args(ProductSort)
ContractStatus = Literal["pass", "fail", "not_applicable"]
#: The statuses of a stored contract result.
CONTRACT_STATUSES: Final[tuple[ContractStatus, ...]] = get_args(ContractStatus)


@dataclass(frozen=True, slots=True)
class ProductQuery:
    """Which products, in which order, which page (every filter optional, all must hold).

    ``owner``: the owning party. ``step``, ``place``: the product has a record (a signed
    message in its chain) of that CBV business step, signed by a device whose place, or whose
    party's place, contains ``place`` (either language, case-insensitive); both given, the same
    record has both. ``start_ms``/``end_ms`` (``end_ms`` excluded): with ``step`` or ``place``
    the device time of that record, else the product's creation time. ``contract``, ``status``:
    a stored result of that contract, with that status. ``recalled``: whether a scan calls the
    product recalled (:func:`search_products`). Then ``sort`` (ties by key), ``descending``,
    and the page: ``limit`` rows after the first ``offset``.
    """

    owner: str | None = None
    step: str | None = None
    place: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    contract: str | None = None
    status: ContractStatus | None = None
    recalled: bool | None = None
    sort: ProductSort = "created"
    descending: bool = False
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.step is not None and self.step not in BUSINESS_STEPS:
            raise ValueError(f"unknown CBV step {self.step!r}")
        if self.status is not None and self.status not in CONTRACT_STATUSES:
            raise ValueError(f"unknown contract status {self.status!r}")
        if self.sort not in PRODUCT_SORTS:
            raise ValueError(f"cannot sort by {self.sort!r}")
        if self.offset < 0 or self.limit < 1:
            raise ValueError("a page starts at offset 0 or later and holds at least one row")


@dataclass(frozen=True, slots=True)
class SearchRow:
    """A product found: key, owner and holder (ids and registered names), creation time,
    whether its scan verdict is ``recalled``, and its number of failed contract results."""

    key: str
    owner: str
    owner_name: str
    owner_name_en: str | None
    created_ms: int
    holder: str | None
    holder_name: str | None
    holder_name_en: str | None
    recalled: bool
    failures: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of a search, and whether another follows it."""

    rows: tuple[SearchRow, ...]
    has_next: bool


def _bytewise(session: Session, column: Any) -> Any:
    """``column`` compared byte by byte: SQLite's default, PostgreSQL's ``"C"`` collation."""
    if session.get_bind().dialect.name == "postgresql":
        return column.collate("C")
    return column


def _recalled_keys(session: Session) -> Select[str] | None:
    """The keys of the products whose scan verdict is ``recalled`` now (None: no recall yet).

    The scan's rule (:func:`tracecore.storage.evidence.named_in_recalls`): a recall entry in
    the latest checkpoint names the product or an ancestor. Ancestors are the lineage table's,
    as for the bundle a scan checks; the products made from a recalled one are found by a
    recursive query, however many they are.
    """
    checkpoint = latest_checkpoint(session)
    named = named_in_recalls(session, checkpoint.size) if checkpoint is not None else frozenset()
    if not named:
        return None
    tree = (
        select(col(Product.key).label("key"))
        .where(col(Product.key).in_(sorted(named)))
        .cte("recalled", recursive=True)
    )
    # UNION, not UNION ALL: a product reached twice is kept once, and the walk ends.
    tree = tree.union(
        select(col(ProductParent.product_key)).join(
            tree, col(ProductParent.parent_key) == tree.c.key
        )
    )
    return select(tree.c.key)


def _places(text: str) -> Select[str]:
    """The devices whose place, or whose party's place, contains ``text`` (either language,
    case-insensitive; ``%`` and ``_`` are text)."""
    columns = (col(Device.place), col(Device.place_en), col(Party.place), col(Party.place_en))
    return (
        select(col(Device.id))
        .join(Party, col(Party.id) == col(Device.party_id))
        .where(or_(*(column.icontains(text, autoescape=True) for column in columns)))
    )


def _times(column: Any, query: ProductQuery) -> list[ColumnElement[bool]]:
    """``column`` within ``query``'s time range."""
    where = []
    if query.start_ms is not None:
        where.append(column >= query.start_ms)
    if query.end_ms is not None:
        where.append(column < query.end_ms)
    return where


def _conditions(query: ProductQuery, recalled: Select[str] | None) -> list[ColumnElement[bool]]:
    """The WHERE terms of ``query`` on the products table."""
    where: list[ColumnElement[bool]] = []
    if query.owner is not None:
        where.append(col(Product.owner_party_id) == query.owner)
    if query.step is not None or query.place is not None:
        records = (
            select(col(ChainLink.product_key))
            .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
            .where(*_times(col(LogEntry.time_ms), query))
        )
        if query.step is not None:
            records = records.where(col(LogEntry.step) == query.step)
        if query.place is not None:
            records = records.where(col(LogEntry.device_id).in_(_places(query.place)))
        where.append(col(Product.key).in_(records))
    else:
        where += _times(col(Product.created_ms), query)
    if query.contract is not None or query.status is not None:
        judged = select(col(ContractResult.product_key))
        if query.contract is not None:
            judged = judged.where(col(ContractResult.contract) == query.contract)
        if query.status is not None:
            judged = judged.where(col(ContractResult.status) == query.status)
        where.append(col(Product.key).in_(judged))
    if query.recalled is True:
        where.append(col(Product.key).in_(recalled) if recalled is not None else false())
    elif query.recalled is False and recalled is not None:
        where.append(col(Product.key).not_in(recalled))
    return where


def _order(session: Session, query: ProductQuery) -> list[Any]:
    """ORDER BY terms: the sort column, then the key (unique, so pages never overlap)."""
    key = _bytewise(session, col(Product.key))
    terms: list[Any] = []
    if query.sort == "owner":
        terms.append(_bytewise(session, col(Product.owner_party_id)))
    elif query.sort == "created":
        terms.append(col(Product.created_ms))
    elif query.sort == "holder":
        terms.append(_bytewise(session, col(Product.holder_party_id)))
    terms.append(key)
    ordered = [term.desc() if query.descending else term.asc() for term in terms]
    if query.sort == "holder":
        # Products nobody holds come last either way (engines disagree where NULL sorts).
        ordered.insert(0, case((col(Product.holder_party_id).is_(None), 1), else_=0))
    return ordered


def search_products(session: Session, query: ProductQuery) -> SearchPage:
    """Return the page of products ``query`` asks for (see :class:`ProductQuery`).

    A product is ``recalled`` exactly when its scan verdict would be (a recall entry in the
    latest checkpoint names it or an ancestor); ``failures`` counts its stored contract
    results with status ``fail``.
    """
    recalled = _recalled_keys(session)
    parties = SQLModel.metadata.tables[Party.__tablename__]
    owner, holder = parties.alias("owner"), parties.alias("holder")
    failures = (
        select(func.count())
        .where(col(ContractResult.product_key) == col(Product.key))
        .where(col(ContractResult.status) == "fail")
        .correlate(Product)
        .scalar_subquery()
    )
    is_recalled = col(Product.key).in_(recalled) if recalled is not None else false()
    columns: list[Any] = [
        col(Product.key),
        col(Product.owner_party_id),
        owner.c.name,
        owner.c.name_en,
        col(Product.created_ms),
        col(Product.holder_party_id),
        holder.c.name,
        holder.c.name_en,
        is_recalled.label("recalled"),
        failures.label("failures"),
    ]
    statement = (
        select(*columns)
        .join(owner, owner.c.id == col(Product.owner_party_id))
        .outerjoin(holder, holder.c.id == col(Product.holder_party_id))
        .where(*_conditions(query, recalled))
        .order_by(*_order(session, query))
        .offset(query.offset)
        .limit(query.limit + 1)
    )
    found = session.execute(statement).all()
    rows = tuple(
        SearchRow(
            key=str(key),
            owner=str(owner_id),
            owner_name=str(owner_name),
            owner_name_en=owner_name_en,
            created_ms=int(created_ms),
            holder=holder_id,
            holder_name=holder_name,
            holder_name_en=holder_name_en,
            recalled=bool(is_recalled),
            failures=int(failed),
        )
        for (
            key,
            owner_id,
            owner_name,
            owner_name_en,
            created_ms,
            holder_id,
            holder_name,
            holder_name_en,
            is_recalled,
            failed,
        ) in found[: query.limit]
    )
    return SearchPage(rows, has_next=len(found) > query.limit)


def count_products(session: Session, query: ProductQuery) -> int:
    """The number of products ``query``'s filters match (its sort and page aside)."""
    statement = (
        select(func.count())
        .select_from(Product)
        .where(*_conditions(query, _recalled_keys(session)))
    )
    return int(session.execute(statement).scalar_one())


def matching_products(session: Session, query: ProductQuery, limit: int) -> list[tuple[str, str]]:
    """The key and owner of the first ``limit`` products ``query``'s filters match, in its
    sort order (its page aside): what an export of the search holds."""
    statement = (
        select(col(Product.key), col(Product.owner_party_id))
        .where(*_conditions(query, _recalled_keys(session)))
        .order_by(*_order(session, query))
        .limit(limit)
    )
    return [(str(key), str(owner)) for key, owner in session.execute(statement)]


@dataclass(frozen=True, slots=True)
class PartyQuery:
    """Parties whose name (either language) or id contains ``text`` (case-insensitive; None:
    every party), sorted by id, ``limit`` after the first ``offset``."""

    text: str | None = None
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.offset < 0 or self.limit < 1:
            raise ValueError("a page starts at offset 0 or later and holds at least one row")


@dataclass(frozen=True, slots=True)
class PartyRow:
    """A party found: its id, names, kind and place (the registry's data)."""

    id: str
    name: str
    name_en: str | None
    kind: str
    place: str | None
    place_en: str | None


@dataclass(frozen=True, slots=True)
class PartyPage:
    """One page of parties, and whether another follows it."""

    rows: tuple[PartyRow, ...]
    has_next: bool


def search_parties(session: Session, query: PartyQuery) -> PartyPage:
    """Return the page of parties ``query`` asks for."""
    statement = select(Party)
    if query.text:
        statement = statement.where(
            or_(
                *(
                    column.icontains(query.text, autoescape=True)
                    for column in (col(Party.name), col(Party.name_en), col(Party.id))
                )
            )
        )
    statement = (
        statement.order_by(_bytewise(session, col(Party.id)))
        .offset(query.offset)
        .limit(query.limit + 1)
    )
    found: Sequence[Party] = session.scalars(statement).all()
    rows = tuple(
        PartyRow(p.id, p.name, p.name_en, p.kind, p.place, p.place_en) for p in found[: query.limit]
    )
    return PartyPage(rows, has_next=len(found) > query.limit)
