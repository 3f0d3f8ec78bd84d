"""The console's product search form: what an inspector typed, read into a query or errors.

The form is a GET form, so its fields are the page's query string; the same string names the
search on the result pages, the sort links and the exports. :func:`read_search` never raises:
every bad value becomes a message next to its field (docs/inspection.md, "Searching and
exporting").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Final
from urllib.parse import urlencode

from contracts import CONTRACTS
from traceapi.pages import DISPLAY_TZ
from tracecore.errors import IdentifierError
from tracecore.identifiers import parse_party_id
from tracecore.message import BUSINESS_STEPS
from tracecore.storage.search import (
    CONTRACT_STATUSES,
    PRODUCT_SORTS,
    ContractStatus,
    ProductQuery,
    ProductSort,
)

__all__ = [
    "FILTERS",
    "MAX_PAGE",
    "PAGE_SIZE",
    "RECALL_CHOICES",
    "Errors",
    "SearchForm",
    "plain_text",
    "read_page",
    "read_search",
]

#: Products on one result page.
PAGE_SIZE: Final = 50
#: The highest page number (50 million products).
MAX_PAGE: Final = 1_000_000
#: The search fields, in the order of the form and of every link's query string.
FILTERS: Final = ("owner", "step", "place", "from", "to", "contract", "result", "recalled")
#: The recall field's choices: any, only recalled products, only the others.
RECALL_CHOICES: Final = ("yes", "no")
_TEXT_MAX: Final = 100
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PAGE: Final = re.compile(r"[0-9]{1,7}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_DAY_MS: Final = 86_400_000

#: What is wrong with the fields: field -> (i18n key, values of its placeholders).
Errors = dict[str, tuple[str, dict[str, object]]]
_CONTRACTS: Final = frozenset(contract.id for contract in CONTRACTS)


@dataclass(frozen=True)
class SearchForm:
    """A search as typed (``values``, shown back in the form) and the query it makes.

    ``errors`` maps a field to the i18n key (and values) of what is wrong with it; with any,
    ``query`` is None. ``page`` is the result page (1 first).
    """

    values: dict[str, str]
    sort: ProductSort = "created"
    descending: bool = False
    page: int = 1
    query: ProductQuery | None = None
    errors: Errors = field(default_factory=dict)

    def link(self, **changes: str | int) -> str:
        """This search's query string (no ``lang``) with ``changes``: sort, order, page, or
        a filter; the first page and empty fields are left out."""
        params: dict[str, str | int] = {k: v for k, v in self.values.items() if v}
        params |= {"sort": self.sort, "order": "desc" if self.descending else "asc"}
        params |= changes
        if params.get("page") == 1:
            del params["page"]
        return urlencode(params)

    def filters(self) -> str:
        """The query string of the filters alone: what an export of this search takes."""
        return urlencode({k: v for k, v in self.values.items() if v})


def _day_start(text: str) -> int | None:
    """Midnight China Standard Time of the date ``YYYY-MM-DD``, in ms (None if not a date)."""
    if not _DATE.fullmatch(text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return int(datetime.combine(day, time(), DISPLAY_TZ).timestamp() * 1000)


def _owner(text: str, own: str | None, errors: Errors) -> str | None:
    """The owner filter; a caller that sees one party only (``own``) is held to it."""
    owner: str | None = None
    if text:
        try:
            owner = parse_party_id(text)
        except IdentifierError:
            errors["owner"] = ("console.search.error.owner", {})
            return None
    if own is not None:
        if owner not in (None, own):
            errors["owner"] = ("console.search.error.own", {})
        return own
    return owner


def plain_text(text: str, longest: int = _TEXT_MAX) -> bool:
    """True for search text a database takes: at most ``longest`` characters, none of them
    control characters (PostgreSQL refuses NUL in text)."""
    return len(text) <= longest and not _CONTROL.search(text)


def read_page(params: Mapping[str, str]) -> int | None:
    """The ``page`` of a result list (1 when not given; None when not 1 to :data:`MAX_PAGE`)."""
    text = params.get("page", "1").strip()
    page = int(text) if _PAGE.fullmatch(text) else 0
    return page if 1 <= page <= MAX_PAGE else None


def _dates(values: Mapping[str, str], errors: Errors) -> tuple[int | None, int | None]:
    """The time range of the from and to dates: [from's midnight, the midnight after to)."""
    bounds: dict[str, int | None] = {}
    for name in ("from", "to"):
        bounds[name] = _day_start(values[name]) if values[name] else None
        if values[name] and bounds[name] is None:
            errors[name] = ("console.search.error.date", {})
    start, last = bounds["from"], bounds["to"]
    if start is not None and last is not None and start > last:
        errors["to"] = ("console.search.error.range", {})
    # The to date is included: the search ends at the next midnight.
    return start, None if last is None else last + _DAY_MS


def _choices(values: Mapping[str, str], errors: Errors) -> None:
    """Check the fields whose values come from the form's lists."""
    allowed = {
        "step": BUSINESS_STEPS,
        "contract": _CONTRACTS,
        "result": CONTRACT_STATUSES,
        "recalled": RECALL_CHOICES,
    }
    for name, choices in allowed.items():
        if values[name] and values[name] not in choices:
            errors[name] = (f"console.search.error.{name}", {})
    if not plain_text(values["place"]):
        errors["place"] = ("console.search.error.place", {})


def _sort(params: Mapping[str, str], errors: Errors) -> tuple[ProductSort, bool]:
    """The sort column and whether it is descending (created, ascending by default)."""
    wanted, order = params.get("sort", "created"), params.get("order", "asc")
    for name in PRODUCT_SORTS:
        if wanted == name and order in ("asc", "desc"):
            return name, order == "desc"
    errors["sort"] = ("console.search.error.sort", {})
    return "created", False


def read_search(params: Mapping[str, str], *, own: str | None = None) -> SearchForm:
    """Read the search form from ``params`` (a page's query string).

    ``own``: the caller may see this party's products only (a party's session): the owner
    filter is that party, and asking for another one is an error.
    """
    values = {name: params.get(name, "").strip() for name in FILTERS}
    errors: Errors = {}
    owner = _owner(values["owner"], own, errors)
    start, end = _dates(values, errors)
    for name in ("from", "to"):
        if errors.get(name, ("",))[0] == "console.search.error.date":
            values[name] = ""  # a date field cannot show it (a browser never sends one)
    _choices(values, errors)
    sort, descending = _sort(params, errors)
    page = read_page(params)
    if page is None:
        errors["page"] = ("console.search.error.page", {"max": MAX_PAGE})
        page = 1
    order = [*FILTERS, "sort", "page"]  # the summary lists them in the order of the form
    errors = dict(sorted(errors.items(), key=lambda item: order.index(item[0])))
    form = SearchForm(values, sort, descending, page, errors=errors)
    if errors:
        return form
    status: ContractStatus | None = None
    for name in CONTRACT_STATUSES:
        if values["result"] == name:
            status = name
    query = ProductQuery(
        owner=owner,
        step=values["step"] or None,
        place=values["place"] or None,
        start_ms=start,
        end_ms=end,
        contract=values["contract"] or None,
        status=status,
        recalled={"yes": True, "no": False}.get(values["recalled"]),
        sort=sort,
        descending=descending,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return dataclasses.replace(form, query=query)
