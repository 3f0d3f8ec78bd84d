"""The answer to a scan, as JSON models; the HTML page renders the same object.

:func:`build_view` turns a :class:`~tracecore.storage.trace.ProductAssessment` (checked at
scan time) into a :class:`ScanOut`. Every value in it comes from the verified bytes, except
party display names (registry data, shown beside the verified party id) and the products made
from this one (each has its own verdict).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session

from contracts import evaluate_story
from contracts.credit import Complaint, Failure, RecallFact, credit_score
from tracecore.storage.trace import ProductAssessment, ScanStats, credit_facts
from tracecore.verdict import SensorPoint, Story, Verdict, decide, downsample

__all__ = [
    "CheckOut",
    "CheckpointOut",
    "ContractOut",
    "EventOut",
    "LineageOut",
    "PartyRef",
    "PointOut",
    "ProductOut",
    "RecallOut",
    "ScanOut",
    "ScansOut",
    "SeriesOut",
    "build_view",
    "party_credit",
    "scan_verdict",
    "unknown_view",
]

VerdictName = Literal["verified", "integrity_failure", "recalled", "suspect_copy", "unknown"]


class CheckOut(BaseModel):
    """One check behind the verdict."""

    name: str
    ok: bool
    detail: str


class PartyRef(BaseModel):
    """A party: the verified id and its registered display name."""

    id: str
    name: str | None = None


class ProductOut(BaseModel):
    """The scanned product."""

    key: str
    uri: str
    gtin: str
    lot: str | None
    serial: str | None
    owner: PartyRef | None
    created_ms: int | None


class EventOut(BaseModel):
    """A signed business event of the product or an ancestor."""

    index: int = Field(description="log index of the entry")
    time_ms: int
    step: str = Field(description="CBV 2.0 business step")
    label: str = Field(description="what the event was, in the page's language")
    device: str
    party: PartyRef
    products: list[str]
    parents: list[str]
    location: str | None
    data: dict[str, Any] | None


class PointOut(BaseModel):
    """One sensor value."""

    time_ms: int
    value: float
    index: int


class SeriesOut(BaseModel):
    """One device's readings of one sensor type, downsampled (min/max buckets) when long."""

    device: str
    type: str
    uom: str
    products: list[str]
    total: int = Field(description="readings before downsampling")
    points: list[PointOut]


class RecallOut(BaseModel):
    """A recall naming the product or an ancestor."""

    index: int
    time_ms: int
    by: str
    reason: str
    products: list[str]


class LineageOut(BaseModel):
    """Where the product came from and what was made from it."""

    parents: dict[str, list[str]] = Field(description="product -> products it was made from")
    ancestors: list[str]
    children: list[str] = Field(description="products made from this one (one step forward)")


class CheckpointOut(BaseModel):
    """The signed checkpoint the verdict was checked against."""

    size: int
    root: str = Field(description="base64 root hash")
    note: str = Field(description="the checkpoint as a C2SP signed note with cosignatures")


class ScansOut(BaseModel):
    """Scans of a serialized code (copy detection)."""

    scans: int = Field(description="every scan of the code so far")
    clients: int = Field(description="distinct clients within the window")
    first_ms: int | None
    first_place: str | None
    threshold: int
    window_hours: float


class ReasonOut(BaseModel):
    """One finding of a contract, with the log entries behind it."""

    text: str
    entries: list[int]


class ContractOut(BaseModel):
    """A contract's result for the product (docs/contracts.md)."""

    id: str
    version: int
    source_sha256: str
    status: Literal["pass", "fail", "not_applicable"]
    log_size: int
    reasons: list[ReasonOut]
    measures: dict[str, int]


class DeductionOut(BaseModel):
    """Points taken off a credit score, and why (docs/contracts.md, "Credit")."""

    points: int
    reason: str
    kind: Literal["failure", "recall", "complaints"] = Field(description="what was counted")
    contract: str | None = Field(default=None, description="the failed contract (failure)")
    products: list[str] = Field(default=[], description="the products concerned")
    entry: int | None = Field(default=None, description="log index of the recall (recall)")
    count: int = Field(default=0, description="products failed, or complaints")


class CreditOut(BaseModel):
    """A producer's credit score over a window (docs/contracts.md)."""

    party: str
    score: int = Field(ge=0, le=100)
    from_ms: int
    to_ms: int
    deductions: list[DeductionOut]


def party_credit(session: Session, party: str, now_ms: int, days: int) -> CreditOut:
    """The credit score of ``party`` over the ``days`` before ``now_ms``."""
    start = now_ms - days * 86_400_000
    facts = credit_facts(session, party, start, now_ms)
    score = credit_score(
        party,
        failures=[Failure(p, c, n) for p, c, n in facts.failures],
        recalls=[RecallFact(i, p, r) for i, p, r in facts.recalls],
        complaints=[Complaint(i, p) for i, p in facts.complaints],
    )
    return CreditOut(
        party=party,
        score=score.score,
        from_ms=start,
        to_ms=now_ms,
        deductions=[
            DeductionOut(
                points=d.points,
                reason=d.reason,
                kind=d.kind,
                contract=d.contract or None,
                products=list(d.products),
                entry=d.entry,
                count=d.count,
            )
            for d in score.deductions
        ],
    )


class ScanOut(BaseModel):
    """The answer to a scan (design.md, "Trace API")."""

    verdict: VerdictName
    detail: str | None = None
    product: ProductOut | None = None
    checks: list[CheckOut] = []
    events: list[EventOut] = []
    readings: list[SeriesOut] = []
    recalls: list[RecallOut] = []
    lineage: LineageOut | None = None
    checkpoint: CheckpointOut | None = None
    scans: ScansOut | None = None
    contracts: list[ContractOut] = []
    producer_credit: CreditOut | None = None
    bundle_url: str | None = None
    pending: bool = False
    scanned: str | None = Field(
        default=None,
        description="the code as scanned, when it names this product by another form of its "
        "GTIN + serial (with or without a lot); product.key is the registered key",
    )


def unknown_view(detail: str) -> ScanOut:
    """The answer for a code that names no registered product."""
    return ScanOut(verdict="unknown", detail=detail)


def scan_verdict(
    assessment: ProductAssessment, scans: ScanStats | None, threshold: int
) -> Verdict | None:
    """The verdict a scan answers for ``assessment`` (None while it waits for a checkpoint).

    ``scans`` are the product's scan statistics (a serialized code's; None for a lot) and
    ``threshold`` the most distinct clients a genuine label has (``AGRITRACE_COPY_THRESHOLD``).
    The public scan answer and the console's dossiers both decide here.
    """
    if assessment.pending is not None:
        return None
    if assessment.inspection is None or assessment.story is None:
        return Verdict.INTEGRITY_FAILURE
    suspect = scans is not None and scans.clients > threshold
    return decide(assessment.checks, assessment.story, suspect_copy=suspect)


def build_view(
    assessment: ProductAssessment,
    *,
    public_url: str,
    names: dict[str, str],
    children: list[str],
    scans: ScanStats | None,
    threshold: int,
    window_hours: float,
    step_label: Any,
) -> ScanOut:
    """Build the scan answer; ``step_label(step, data)`` names an event in the page's language."""
    key = assessment.product
    story = assessment.story
    verdict = scan_verdict(assessment, scans, threshold)
    scans_out = (
        None
        if scans is None
        else ScansOut(
            scans=scans.scans,
            clients=scans.clients,
            first_ms=scans.first_ms,
            first_place=scans.first_place,
            threshold=threshold,
            window_hours=window_hours,
        )
    )
    product = ProductOut(
        key=key.path,
        uri=key.uri(public_url),
        gtin=key.gtin,
        lot=key.lot,
        serial=key.serial,
        owner=None if story is None or story.owner is None else _party(story.owner, names),
        created_ms=None if story is None else story.created,
    )
    if verdict is None:
        return ScanOut(
            verdict="unknown",
            detail=assessment.pending,
            product=product,
            scans=scans_out,
            pending=True,
        )
    checks = [CheckOut(name=c.name, ok=c.ok, detail=c.detail) for c in assessment.checks]
    if assessment.inspection is None or story is None:
        return ScanOut(
            verdict=Verdict.INTEGRITY_FAILURE.value,
            detail=_detail(Verdict.INTEGRITY_FAILURE, assessment),
            product=product,
            checks=checks,
            scans=scans_out,
        )
    checkpoint = assessment.inspection.checkpoint
    return ScanOut(
        verdict=verdict.value,
        detail=_detail(verdict, assessment),
        product=product,
        checks=checks,
        events=[
            EventOut(
                index=e.index,
                time_ms=e.time,
                step=e.step,
                label=step_label(e.step, e.data),
                device=e.device,
                party=_party(e.party, names),
                products=list(e.products),
                parents=list(e.parents),
                location=e.location,
                data=None if e.data is None else _jsonable(e.data),
            )
            for e in story.events
        ],
        readings=_series(story),
        recalls=[
            RecallOut(
                index=r.index, time_ms=r.time, by=r.by, reason=r.reason, products=list(r.products)
            )
            for r in story.recalls
        ],
        lineage=LineageOut(
            parents={k: list(v) for k, v in sorted(story.parents.items())},
            ancestors=list(story.ancestors()),
            children=children,
        ),
        checkpoint=None
        if checkpoint is None or assessment.checkpoint is None
        else CheckpointOut(
            size=checkpoint.size,
            root=base64.b64encode(checkpoint.root_hash).decode("ascii"),
            note=assessment.checkpoint,
        ),
        scans=scans_out,
        # Contract results judged on data that failed a check would vouch for it: none then.
        contracts=_contracts(story, checkpoint.size)
        if checkpoint is not None and verdict is not Verdict.INTEGRITY_FAILURE
        else [],
        bundle_url=f"{public_url.rstrip('/')}/v1/bundle/{key.path}",
    )


def _detail(verdict: Verdict, assessment: ProductAssessment) -> str | None:
    if verdict is Verdict.INTEGRITY_FAILURE:
        failed = [c.name for c in assessment.checks if not c.ok]
        return "failed checks: " + ", ".join(failed)
    return None


def _party(party_id: str, names: dict[str, str]) -> PartyRef:
    return PartyRef(id=party_id, name=names.get(party_id))


def _jsonable(value: object) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


_CONTRACTS: dict[tuple[int, int], tuple[Story, list[ContractOut]]] = {}


def _contracts(story: Story, log_size: int) -> list[ContractOut]:
    """The contract results of a verified story, remembered per story object and log size."""
    key = (id(story), log_size)
    found = _CONTRACTS.get(key)
    if found is not None and found[0] is story:
        return found[1]
    results = [
        ContractOut(
            id=r.contract,
            version=r.version,
            source_sha256=r.source_sha256,
            status=r.status.value,
            log_size=r.log_size,
            reasons=[ReasonOut(text=x.text, entries=list(x.entries)) for x in r.reasons],
            measures=dict(r.measures),
        )
        for r in evaluate_story(story, log_size)
    ]
    if len(_CONTRACTS) >= 512:
        _CONTRACTS.pop(next(iter(_CONTRACTS)))
    _CONTRACTS[key] = (story, results)
    return results


_SERIES: dict[int, tuple[Story, list[SeriesOut]]] = {}


def _series(story: Story) -> list[SeriesOut]:
    """The downsampled series of a story, remembered per story object (stories are immutable
    and memoized by the inspection they come from)."""
    found = _SERIES.get(id(story))
    if found is not None and found[0] is story:
        return found[1]
    series = _compute_series(story)
    if len(_SERIES) >= 512:
        _SERIES.pop(next(iter(_SERIES)))
    _SERIES[id(story)] = (story, series)
    return series


def _compute_series(story: Story) -> list[SeriesOut]:
    groups: dict[tuple[str, str, str], list[SensorPoint]] = defaultdict(list)
    for point in story.readings:
        groups[(point.device, point.type, point.uom)].append(point)
    out = []
    for (device, kind, uom), points in sorted(groups.items()):
        products = sorted({p for point in points for p in point.products})
        out.append(
            SeriesOut(
                device=device,
                type=kind,
                uom=uom,
                products=products,
                total=len(points),
                points=[
                    PointOut(time_ms=p.time, value=p.value, index=p.index)
                    for p in downsample(points)
                ],
            )
        )
    return out
