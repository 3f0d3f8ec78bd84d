"""A scan's queries use indexes: none walks a table that grows with the log (SQLite plans)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlmodel import Session
from trace_kit import CARTON, FARM, LOG, LOT, make_world

from tracecore.bundle import Policy
from tracecore.identifiers import ProductKey
from tracecore.storage import make_engine, upgrade
from tracecore.storage.items import find_product
from tracecore.storage.trace import assess_product, credit_facts, recent_products, scan_stats

#: For each table that grows with the log, the products or the scans: how a plan may reach its
#: rows. Anything else (a SCAN, a range over all indexes) is a walk whose cost grows with it.
_ALLOWED: Final = {
    "log_entries": ("(index=?)", "ix_log_entries_registry (kind=?", "(device_id=?)"),
    "chain_links": ("(product_key=?", "ix_chain_links_log_index (log_index=?)"),
    "merkle_nodes": ("(level=? AND idx=?)",),
    "products": ("(key=?)", "uq_products_item_key_item_rank (item_key=?)"),
    "product_parents": ("(product_key=?)",),
    "scan_clients": ("(product_key=?",),
    "contract_results": ("(status=? AND evaluated_ms>? AND evaluated_ms<?)",),
    "feedback": ("ix_feedback_complaints_at_ms (at_ms>? AND at_ms<?)",),
}
#: The one query allowed to range over the log: the completeness check counts the entries
#: from the lineage's oldest chain head to the checkpoint (docs/trace.md says what it costs).
_COMPLETENESS: Final = 'SELECT COUNT(*) FROM log_entries WHERE "index" >='


def test_scan_queries_never_walk_a_growing_table(tmp_path: Path, app_client: Any) -> None:
    """Every SELECT of find_product, assess_product, scan_stats, credit_facts and the stall
    page's recent_products reaches rows by a key."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.sqlite3'}")
    upgrade(engine)
    with make_world(engine, app_client):
        pass
    policy = Policy(LOG.verifier, {}, 0)
    statements: list[str] = []
    with engine.connect() as connection:
        dbapi: Any = connection.connection.dbapi_connection
        dbapi.set_trace_callback(statements.append)
        with Session(bind=connection) as session:
            for scanned in (CARTON, ProductKey(CARTON.gtin, serial=CARTON.serial), LOT):
                assert find_product(session, scanned).found
            assessment = assess_product(session, CARTON, policy)
            assert assessment is not None
            assert assessment.ok
            scan_stats(session, CARTON.path, 0)
            credit_facts(session, FARM, 0, 2**62)
            assert CARTON.path in recent_products(session, FARM, 12)
        dbapi.set_trace_callback(None)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) >= 10
        for statement in selects:
            if statement.startswith(_COMPLETENESS):
                continue
            for row in dbapi.execute("EXPLAIN QUERY PLAN " + statement).fetchall():
                detail = str(row[3])
                words = detail.split()
                if len(words) < 2 or words[0] not in {"SCAN", "SEARCH"}:
                    continue
                table = _table(words[1], statement)
                allowed = _ALLOWED.get(table)
                if allowed is None:
                    continue  # a small table: parties, checkpoints, cosignatures
                assert words[0] == "SEARCH", (statement, detail)
                assert any(a in detail for a in allowed), (statement, detail)
    engine.dispose()


def _table(name: str, statement: str) -> str:
    """The table an alias in a plan stands for (``r`` in ``contract_results r``)."""
    for table in _ALLOWED:
        if name == table or f"{table} {name} " in statement + " ":
            return table
    return name
