"""The console's product dossier and recall form (docs/inspection.md, "The product dossier").

* ``GET /console/products/{key}``: everything about one product. Its verdict and the checks
  behind it, exactly as the public scan computes them (:func:`traceapi.routes.scan.read_evidence`,
  :func:`traceapi.views.scan_verdict`), but without counting a scan; the signed history decoded
  with the public page's vocabulary, each entry linked to its inclusion proof; the temperature
  chart; the stored contract results with the entries they cite; the recalls that reach it and
  the scans since; the buyers' feedback and scan statistics; the lineage graph
  (:mod:`traceapi.lineage_graph`), ``?depth=`` 1-6 generations each way (3 by default),
  ``?lineage=all`` to list every product of its groups in full.
* ``GET /console/recall?product={key}``: the confirmation page of a recall (what it reaches).
* ``POST /console/recall``: the recall itself, appended to the log exactly as ``POST /v1/recalls``
  does (:func:`traceapi.routes.recalls.record_recall`), then back to the dossier.

Only inspectors and the admin may use these pages (the console admits nobody else today; a
party user, when there is one, would see only its own products and could not recall).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import Engine
from sqlmodel import Session

from traceapi.access import note_parties
from traceapi.console.history import HISTORY_ROWS, dossier_href, history, party_name
from traceapi.console.pages import HEADERS, LangQuery, csrf_matches, page, page_language, read_form
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang, text
from traceapi.lineage_graph import (
    CURRENT_ID,
    MAX_DEPTH,
    STATUSES,
    GraphText,
    Plan,
    lineage_svg,
    plan_lineage,
)
from traceapi.paths import raw_path
from traceapi.routes.recalls import REASON_MAX, ReasonRefused, recaller, record_recall
from traceapi.routes.scan import product_view, read_evidence, story_context
from traceapi.state import scan_policy
from traceapi.views import ScanOut, scan_verdict
from traceapi.vocabulary import product_label
from tracecore.bundle import Policy
from tracecore.errors import IdentifierError, NotFound
from tracecore.identifiers import ProductKey
from tracecore.settings import Settings
from tracecore.storage.dossier import (
    LoggedRecall,
    ScanWindow,
    StoredResult,
    feedback_on,
    neighbours,
    owners,
    reached_by_recalls,
    recalls_reaching,
    scanned,
    scans_since,
    stored_results,
)
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import descendants
from tracecore.storage.items import find_product
from tracecore.storage.models import Product
from tracecore.storage.trace import ScanStats, assess_product, party_profiles, scan_stats

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_PREFIX: Final = "/console/products/"
_HOUR_MS: Final = 3_600_000
#: Generations drawn each way by default.
DEPTH: Final = 3
#: Products of the graph whose verdict is computed as a scan computes it, nearest first; the
#: others show only whether a recall in the log reaches them (``unchecked`` otherwise).
VERDICT_NODES: Final = 40
#: Products of a group listed under the graph before "show all" (``?lineage=all``).
GROUP_LISTED: Final = 100
#: Feedback items listed (all are counted).
FEEDBACK_LISTED: Final = 50
#: Descendants listed openly on the recall page; the rest are behind "show all".
DESCENDANTS_OPEN: Final = 20
_RECALLERS: Final = ("inspector", "admin")


def _may_see(user: ConsoleUser, row: Product) -> bool:
    """Inspectors and the admin see every product; anyone else only their own party's."""
    return user.role in _RECALLERS or (
        user.party_id is not None and row.owner_party_id == user.party_id
    )


@dataclass(frozen=True, slots=True)
class _Here:
    """The request a page answers: who asks, in which language."""

    request: Request
    user: ConsoleUser
    lang: Lang

    def render(
        self, template: str, status_code: int, context: Mapping[str, object]
    ) -> HTMLResponse:
        """A console page of the products section (its own path as sent, escapes intact)."""
        context = {"path": raw_path(self.request), "section": "products", **context}
        return page(template, self.lang, status_code, user=self.user, **context)

    def message(self, status_code: int, title: str, detail: str) -> HTMLResponse:
        """A page that only says why there is nothing to show (404, 403)."""
        words = {"title": text(self.lang, title), "detail": detail}
        return self.render("console/message.html", status_code, words)

    def not_found(self, typed: str, why: str) -> HTMLResponse:
        """The 404 page of a key that names no registered product (``typed`` as given)."""
        detail = text(self.lang, "console.dossier.not_found.detail", product=typed, why=why)
        return self.message(404, "console.dossier.not_found", detail)

    def refused(self, what: str) -> HTMLResponse:
        """The 403 page of a user without the right (``what``: ``dossier``, ``recall``)."""
        detail = text(self.lang, f"console.{what}.refused.detail")
        return self.message(403, f"console.{what}.refused", detail)


def _depth(value: str | None) -> int:
    """``?depth=``: 1 to :data:`MAX_DEPTH` generations; :data:`DEPTH` if absent or no number."""
    try:
        return max(1, min(MAX_DEPTH, int(value or DEPTH)))
    except ValueError:
        return DEPTH


def _short_label(lang: Lang, key: str) -> str:
    """What a graph node says first: the serial of an item, else the lot."""
    try:
        parsed = ProductKey.parse(key)
    except IdentifierError:
        return key
    if parsed.serial is not None:
        return text(lang, "serial") + " " + parsed.serial
    return text(lang, "lot") + " " + (parsed.lot or "")


@dataclass(frozen=True, slots=True)
class _Graph:
    """The lineage graph of a dossier: the plan, its SVG, the statuses and owners shown."""

    plan: Plan
    svg: Markup
    statuses: dict[str, str]
    owners: dict[str, str]
    checked: int

    @property
    def further(self) -> bool:
        """True when a product drawn has generations beyond the ones drawn."""
        return any(node.further for node in self.plan.nodes)


@dataclass(frozen=True, slots=True)
class _Reader:
    """What judging products needs: the page's language, the trust policy, settings, now."""

    lang: Lang
    policy: Policy
    settings: Settings
    now_ms: int

    def verdict(self, session: Session, key: str) -> str | None:
        """The verdict a scan of ``key`` would answer (without counting a scan), ``pending``
        before its first checkpoint, None for a product the database does not know."""
        product = ProductKey.parse_canonical(key)
        assessment = assess_product(session, product, self.policy)
        if assessment is None:
            return None
        stats = _stats(session, product, self.settings, self.now_ms)
        verdict = scan_verdict(assessment, stats, self.settings.copy_threshold)
        return "pending" if verdict is None else verdict.value


def _node_statuses(
    session: Session, keys: list[str], known: dict[str, str], reader: _Reader
) -> dict[str, str]:
    """Each product's status: the scan's verdict for the :data:`VERDICT_NODES` nearest, else
    ``recalled`` when a recall in the log reaches it, else ``unchecked``."""
    statuses = dict(known)
    for key in [k for k in keys if k not in statuses][: max(0, VERDICT_NODES - len(statuses))]:
        verdict = reader.verdict(session, key)
        if verdict is not None:
            statuses[key] = verdict
    rest = [k for k in keys if k not in statuses]
    reached = reached_by_recalls(session, rest) if rest else set()
    statuses.update({k: "recalled" if k in reached else "unchecked" for k in rest})
    return statuses


_STATUS_NAMES: Final = (
    "verified",
    "integrity_failure",
    "recalled",
    "suspect_copy",
    "pending",
    "unchecked",
)


def _graph_text(lang: Lang, depth: int) -> GraphText:
    levels = {-1: text(lang, "console.lineage.parents"), 1: text(lang, "console.lineage.children")}
    for n in range(2, depth + 1):
        levels[-n] = text(lang, "console.lineage.back", n=n)
        levels[n] = text(lang, "console.lineage.forward", n=n)
    return GraphText(
        title=text(lang, "console.lineage.title"),
        current=text(lang, "console.dossier.this_product"),
        levels=levels,
        statuses={s: text(lang, f"console.lineage.status.{s}") for s in _STATUS_NAMES},
        more=text(lang, "console.lineage.more"),
        more_parents=text(lang, "console.lineage.more_parents"),
        more_children=text(lang, "console.lineage.more_children"),
        further=text(lang, "console.lineage.further"),
    )


def _graph(session: Session, product: str, verdict: str, reader: _Reader, depth: int) -> _Graph:
    """Plan, judge and draw the lineage of ``product`` (whose verdict is ``verdict``)."""
    lang = reader.lang
    plan = plan_lineage(
        product, lambda keys, direction: neighbours(session, keys, direction), depth=depth
    )
    keys = plan.keys
    statuses = _node_statuses(session, keys, {product: verdict}, reader)
    found = owners(session, keys)
    profiles = party_profiles(session, set(found.values()))
    labels = {
        key: (
            _short_label(lang, key),
            party_name(lang, found[key], profiles) if key in found else "",
        )
        for key in keys
    }
    depth_query = "" if depth == DEPTH else f"&depth={depth}"
    svg = lineage_svg(
        plan,
        status=statuses,
        labels=labels,
        # Following the graph lands on the graph again, scrolled to the product followed.
        href=lambda key: dossier_href(key, lang) + depth_query + "#" + CURRENT_ID,
        group_href=lambda group: f"#more-{group}",
        text=_graph_text(lang, depth),
    )
    checked = sum(1 for s in statuses.values() if s != "unchecked")
    # lineage_svg escapes every text and attribute it writes.
    return _Graph(plan, Markup(svg), statuses, found, checked)  # noqa: S704


@dataclass(frozen=True, slots=True)
class _Result:
    """A contract result as the dossier lists it."""

    name: str
    status: str
    version: int | None
    log_size: int
    evaluated_ms: int | None
    findings: tuple[tuple[str, tuple[int, ...]], ...]
    unreadable: str | None


def _contract_name(lang: Lang, contract: str) -> str:
    try:
        return text(lang, "contract." + contract)
    except KeyError:
        return contract


def _results(lang: Lang, stored: list[StoredResult], view: ScanOut) -> tuple[list[_Result], bool]:
    """The stored results, or (before the evaluator ran) the ones the scan computed now."""
    if stored:
        return [
            _Result(
                _contract_name(lang, r.contract),
                r.status,
                r.version,
                r.log_size,
                r.evaluated_ms,
                tuple((f.text, f.entries) for f in r.findings),
                r.unreadable,
            )
            for r in stored
        ], True
    return [
        _Result(
            _contract_name(lang, c.id),
            c.status,
            c.version,
            c.log_size,
            None,
            tuple((x.text, tuple(x.entries)) for x in c.reasons),
            None,
        )
        for c in view.contracts
    ], False


@dataclass(frozen=True, slots=True)
class _Recalled:
    """The recalls in the log that reach the product, and the scans since the first."""

    recalls: list[LoggedRecall]
    since: ScanWindow
    products: int


def _recalled(session: Session, product: str) -> _Recalled | None:
    recalls = recalls_reaching(session, product)
    if not recalls:
        return None
    try:
        reached = [product, *descendants(session, [product])]
    except NotFound:  # more than MAX_LINEAGE descendants: the product's own scans only
        reached = [product]
    first = min(r.time_ms for r in recalls)
    return _Recalled(recalls, scans_since(session, reached, first), len(reached))


@dataclass(frozen=True, slots=True)
class _Options:
    """What the dossier's query asks for: generations drawn, groups and history in full."""

    depth: int = DEPTH
    lineage_all: bool = False
    history_all: bool = False
    recalled: str | None = None

    @property
    def query(self) -> str:
        """The page's own query (without ``lang``), for the language switch."""
        return "" if self.depth == DEPTH else f"?depth={self.depth}"


@router.get("/products/{key:path}", response_class=HTMLResponse)
def dossier(  # noqa: PLR0917 (the page's query parameters)
    key: str,  # noqa: ARG001 (parsed from the raw path, escapes intact)
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
    depth: Annotated[str | None, Query(max_length=4)] = None,
    lineage: Annotated[str | None, Query(max_length=8)] = None,
    history_: Annotated[str | None, Query(alias="history", max_length=8)] = None,
    recalled: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """One product's dossier: verdict, checks, history, chart, contracts, lineage, scans."""
    here = _Here(request, user, page_language(request, lang))
    typed = raw_path(request)[len(_PREFIX) :]
    if not typed:
        return RedirectResponse(f"/console/products?lang={here.lang}", status.HTTP_303_SEE_OTHER)
    options = _Options(_depth(depth), lineage == "all", history_ == "all", recalled)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        found = _lookup(session, typed)
        if isinstance(found, str):
            return here.not_found(typed, found)
        product, row = found
        if typed != product.path:
            # One URL per product: the registered key's canonical spelling.
            query = f"?{request.url.query}" if request.url.query else ""
            target = _PREFIX + product.path + query
            return RedirectResponse(target, status.HTTP_308_PERMANENT_REDIRECT)
        if not _may_see(user, row):
            return here.refused("dossier")
        context = _read_dossier(session, here, product, options)
    if context is None:  # the product was deleted between the two reads
        return here.not_found(typed, f"{product.path} is not registered")
    return here.render("console/dossier.html", 200, context)


def _read_dossier(
    session: Session, here: _Here, product: ProductKey, options: _Options
) -> dict[str, object] | None:
    """Everything the dossier of ``product`` shows, read in one transaction."""
    request, lang = here.request, here.lang
    settings: Settings = request.app.state.settings
    now: int = request.app.state.clock()
    policy = scan_policy(request)
    evidence = read_evidence(session, product, policy, now, places=True)
    if evidence is None:
        return None
    row = evidence.assessment.row
    view = product_view(evidence, settings, _stats(session, product, settings, now), lang)
    verdict = "pending" if view.pending else view.verdict
    graph = _graph(
        session, product.path, verdict, _Reader(lang, policy, settings, now), options.depth
    )
    recall = _recalled(session, product.path)
    results, stored = _results(lang, stored_results(session, product.path), view)
    parties = {p for p in (row.owner_party_id, row.holder_party_id, row.pending_party_id) if p}
    if recall is not None:
        parties.update(r.by for r in recall.recalls)
    profiles = {
        **party_profiles(session, parties | set(graph.owners.values())),
        **evidence.profiles,
    }
    # Whose data the page shows: the product's owner and holders, the owners in the graph.
    note_parties(
        request,
        row.owner_party_id,
        row.holder_party_id,
        row.pending_party_id,
        *graph.owners.values(),
    )
    notice = None
    if options.recalled is not None and recall is not None:
        notice = next(
            (
                r
                for r in recall.recalls
                if str(r.index) == options.recalled and product.path in r.products
            ),
            None,
        )
    context = story_context(view, evidence.page(), lang)
    context["history"] = None
    story = evidence.assessment.story
    if story is not None:
        cited = {e for r in results for _, entries in r.findings for e in entries}
        context["history"] = history(
            story,
            lang=lang,
            profiles=profiles,
            places=evidence.places,
            cited=cited,
            everything=options.history_all,
        )
    return {
        **context,
        "path": _PREFIX + product.path + options.query,
        "view": view,
        "verdict": verdict,
        "row": row,
        "profiles": profiles,
        "product_label": product_label(lang, product.path),
        "graph": graph,
        "options": options,
        "max_depth": MAX_DEPTH,
        "group_listed": GROUP_LISTED,
        "recall": recall,
        "notice": notice,
        "results": results,
        "stored": stored,
        "feedback": feedback_on(session, product.path, FEEDBACK_LISTED),
        "history_limit": HISTORY_ROWS,
        "public_href": f"/{product.path}?lang={lang}",
        "recall_href": "/console/recall?" + urlencode({"product": product.path, "lang": lang}),
        "proof_size": None if view.checkpoint is None else view.checkpoint.size,
        "dossier_href": dossier_href,
        "statuses": STATUSES,
    }


def _stats(
    session: Session, product: ProductKey, settings: Settings, now_ms: int
) -> ScanStats | None:
    """The scan statistics the public scan's verdict counts (serialized codes only), read
    without counting a scan."""
    if product.serial is None:
        return None
    return scan_stats(session, product.path, now_ms - int(settings.copy_window_hours * _HOUR_MS))


# -- recall ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reach:
    """What a recall of a product reaches: its descendants, and how many were scanned."""

    product: ProductKey
    row: Product
    descendants: list[str]
    too_many: bool
    scanned_products: int
    scans: int
    recalls: list[LoggedRecall]


def _reach(session: Session, product: ProductKey, row: Product) -> _Reach:
    try:
        below = descendants(session, [product.path])
        too_many = False
    except NotFound:
        below, too_many = [], True
    products, scans = scanned(session, below)
    reaching = recalls_reaching(session, product.path)
    return _Reach(product, row, below, too_many, products, scans, reaching)


def _recall_page(
    session: Session,
    here: _Here,
    product: ProductKey,
    row: Product,
    *,
    status_code: int = 200,
    error: str | None = None,
    reason: str = "",
) -> HTMLResponse:
    """The confirmation page (again, with ``error``, when the reason was refused)."""
    reach = _reach(session, product, row)
    profiles = party_profiles(session, {row.owner_party_id, *(r.by for r in reach.recalls)})
    note_parties(here.request, row.owner_party_id, row.holder_party_id)
    context: dict[str, object] = {
        "path": "/console/recall?" + urlencode({"product": product.path}),
        "reach": reach,
        "profiles": profiles,
        "product_label": product_label(here.lang, product.path),
        "dossier": dossier_href(product.path, here.lang),
        "descendants_open": DESCENDANTS_OPEN,
        "reason_max": REASON_MAX,
        "error": error,
        "reason": reason,
        "dossier_href": dossier_href,
    }
    return here.render("console/recall.html", status_code, context)


def _lookup(session: Session, typed: str) -> tuple[ProductKey, Product] | str:
    """The registered product and its row a typed key names, or why there is none."""
    try:
        key = ProductKey.parse(typed)
    except IdentifierError as exc:
        return str(exc)
    found = find_product(session, key)
    if found.product is None:
        return found.detail
    row = session.get(Product, found.product.path)
    if row is None:
        return f"{found.product.path} is not registered"
    return found.product, row


def _may_recall(user: ConsoleUser) -> bool:
    """Recalls are for inspectors and the admin (as ``POST /v1/recalls``)."""
    return user.role in _RECALLERS


@router.get("/recall", response_class=HTMLResponse)
def recall_form(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    product: Annotated[str | None, Query(max_length=512)] = None,
    lang: LangQuery = None,
) -> Response:
    """The confirmation page of a recall: the product and every product it reaches."""
    here = _Here(request, user, page_language(request, lang))
    if not _may_recall(user):
        return here.refused("recall")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        found = _lookup(session, product or "")
        if isinstance(found, str):
            return here.not_found(product or "", found)
        return _recall_page(session, here, *found)


@router.post("/recall", response_class=HTMLResponse)
async def recall(request: Request, user: Annotated[ConsoleUser, Depends(current_user)]) -> Response:
    """Recall a product (the form's CSRF token required); back to its dossier."""
    form = await read_form(request)
    here = _Here(request, user, page_language(request, form.get("lang")))
    if not csrf_matches(user, form):
        return page("console/forbidden.html", here.lang, 403, path="/console/", user=user)
    if not _may_recall(user):
        return here.refused("recall")
    engine: Engine = request.app.state.engine
    typed, reason = form.get("product", ""), form.get("reason", "")
    with session_scope(engine) as session:
        found = _lookup(session, typed)
    if isinstance(found, str):
        return here.not_found(typed, found)
    product, row = found
    try:
        done = record_recall(
            engine, product, reason, by=recaller(user.party_id), now_ms=request.app.state.clock()
        )
    except ReasonRefused:
        error = text(here.lang, "console.recall.reason_required", max=REASON_MAX)
        with session_scope(engine) as session:
            return _recall_page(
                session, here, product, row, status_code=422, error=error, reason=reason
            )
    note_parties(request, row.owner_party_id, row.holder_party_id)
    query = urlencode({"recalled": done.index, "lang": here.lang})
    return RedirectResponse(
        f"{_PREFIX}{quote(done.product, safe='/%')}?{query}#recalls",
        status.HTTP_303_SEE_OTHER,
        headers=dict(HEADERS),
    )
