"""The lineage graph's pure layout (traceapi/lineage_graph.py): drawn, collapsed, escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import pytest

from traceapi.lineage_graph import (
    CURRENT_ID,
    STATUSES,
    Direction,
    GraphText,
    Plan,
    lineage_svg,
    plan_lineage,
)

SVG = "{http://www.w3.org/2000/svg}"
TEXT = GraphText(
    title="Lineage",
    current="this product",
    levels={-1: "made from", 1: "made into"},
    statuses={name: f"status {name}" for name in STATUSES},
    more="and {n} more",
    more_parents="of the products {product} was made from",
    more_children="of the products made from {product}",
    further="more generations not drawn",
)


class Graph:
    """A synthetic lineage: edges child -> parent, and a record of what the planner asked."""

    def __init__(self, edges: Sequence[tuple[str, str]]) -> None:
        self.parents: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        for child, parent in edges:
            self.parents.setdefault(child, []).append(parent)
            self.children.setdefault(parent, []).append(child)
        self.calls: list[tuple[Direction, tuple[str, ...]]] = []

    def fetch(self, keys: Sequence[str], direction: Direction) -> Mapping[str, Sequence[str]]:
        """Every parent (or child) of each of ``keys``, sorted, as the database answers."""
        self.calls.append((direction, tuple(keys)))
        found = self.parents if direction == "parents" else self.children
        return {key: sorted(found[key]) for key in keys if key in found}


def _draw(plan: Plan, status: Mapping[str, str] | None = None) -> ET.Element:
    """Draw ``plan`` and parse the SVG as XML (which fails on anything left unescaped)."""
    svg = lineage_svg(
        plan,
        status=status or {},
        labels={key: (f"label {key}", f"owner of {key}") for key in plan.keys},
        href=lambda key: f"/console/products/{key}",
        group_href=lambda group: f"#more-{group}",
        text=TEXT,
    )
    return ET.fromstring(svg)  # noqa: S314 (our own output)


def name_of(root: ET.Element, element: ET.Element) -> str:
    """An element's accessible name from ``aria-labelledby`` (texts joined by spaces)."""
    texts = {e.get("id"): "".join(e.itertext()) for e in root.iter() if e.get("id")}
    return " ".join(texts[ident] for ident in element.attrib["aria-labelledby"].split())


def _links(root: ET.Element) -> dict[str, str]:
    """Each link of the drawing: href -> accessible name."""
    return {a.attrib["href"]: name_of(root, a) for a in root.iter(f"{SVG}a")}


def _shown(element: ET.Element) -> str:
    """The text an element shows (its texts but hidden ones and those hidden from readers)."""
    return " ".join(
        "".join(t.itertext())
        for t in element.iter(f"{SVG}text")
        if t.get("display") != "none" and t.get("aria-hidden") != "true"
    )


def _expands(level: int, way: str, *, depth: int) -> bool:
    """Whether a product at ``level`` has its ``way`` drawn: away from the centre, to depth."""
    if way == "parents":
        return level <= 0 and level > -depth
    return level >= 0 and level < depth


def _big() -> Graph:
    """A centre made from 30 products (each from 3 more), made into 300 (each into 4 more)."""
    edges = [("centre", f"p{n:02d}") for n in range(30)]
    edges += [(f"p{n:02d}", f"g{n:02d}-{m}") for n in range(30) for m in range(3)]
    edges += [(f"c{n:03d}", "centre") for n in range(300)]
    edges += [(f"d{n:03d}-{m}", f"c{n:03d}") for n in range(300) for m in range(4)]
    return Graph(edges)


def test_a_small_lineage_is_drawn_whole_both_ways() -> None:
    """Ancestors left, descendants right, each product once with a link named by its status."""
    graph = Graph([("lot", "flock"), ("case1", "lot"), ("case2", "lot"), ("pallet", "case1")])
    plan = plan_lineage("lot", graph.fetch, depth=3)
    assert {level: [n.key for n in nodes] for level, nodes in plan.columns.items()} == {
        -1: ["flock"],
        0: ["lot"],
        1: ["case1", "case2"],
        2: ["pallet"],
    }
    assert not plan.groups
    root = _draw(plan, {"flock": "verified", "case1": "recalled", "pallet": "integrity_failure"})
    links = _links(root)
    assert set(links) == {f"/console/products/{k}" for k in ("flock", "case1", "case2", "pallet")}
    assert links["/console/products/case1"] == "label case1 owner of case1 , status recalled"
    assert links["/console/products/case2"].endswith("status unchecked"), "no status given"
    current = next(g for g in root.iter(f"{SVG}g") if g.get("id") == CURRENT_ID)
    assert name_of(root, current) == "label lot owner of lot , status unchecked, this product"
    for link in root.iter(f"{SVG}a"):  # WCAG 2.5.3: the name starts with the text shown
        assert _shown(link)
        assert name_of(root, link).startswith(_shown(link)), _shown(link)
    assert len(list(root.iter(f"{SVG}path"))) == 4, "one line per edge"


def test_every_status_is_told_apart_without_colour() -> None:
    """Each status has a sign and a border pattern of its own, not only a colour (WCAG 1.4.1)."""
    signs = [style.sign for style in STATUSES.values()]
    patterns = [style.dash for style in STATUSES.values() if style.dash is not None]
    assert len(set(signs)) == len(signs)
    assert len(set(patterns)) >= len(STATUSES) - 2  # solid (verified) and one shared dotted
    graph = Graph([(f"k{n}", "centre") for n in range(len(STATUSES))])
    status = {f"k{n}": name for n, name in enumerate(STATUSES)}
    root = _draw(plan_lineage("centre", graph.fetch), status)
    for link in root.iter(f"{SVG}a"):
        name = status[link.attrib["href"].rsplit("/", 1)[1]]
        drawn = "".join(t.text or "" for t in link.iter(f"{SVG}text"))
        assert drawn.startswith(STATUSES[name].sign), name


def test_a_large_lineage_collapses_into_groups() -> None:
    """Hundreds of products: at most 8 per product and 24 per column, the rest in groups that
    name every product not drawn; the planner reads one generation at a time."""
    graph = _big()
    plan = plan_lineage("centre", graph.fetch, depth=3, limit=8, column_limit=24)
    drawn = set(plan.keys)
    for level, nodes in plan.columns.items():
        assert sum(1 for n in nodes if n.key is not None) <= 24, level
    by_id = {node.id: node for node in plan.nodes}
    for node in plan.nodes:
        # Each product expands away from the centre (both ways for the centre), to depth 3.
        ways = [w for w in ("parents", "children") if _expands(node.level, w, depth=3)]
        for way in ways if node.key is not None else ():
            if way == "parents":
                shown = [by_id[e.source] for e in plan.edges if e.target == node.id]
            else:
                shown = [by_id[e.target] for e in plan.edges if e.source == node.id]
            shown = [n for n in shown if (n.level < node.level) == (way == "parents")]
            products = [n.key for n in shown if n.key is not None]
            hidden = [k for n in shown if n.key is None for k in n.hidden]
            assert len(products) <= 8
            found = graph.parents if way == "parents" else graph.children
            assert sorted(products + hidden) == sorted(found.get(node.key or "", [])), node
    centre_groups = [g for g in plan.groups if g.of == "centre"]
    assert [(g.level, len(g.hidden)) for g in centre_groups] == [(-1, 22), (1, 292)]
    assert centre_groups[1].hidden == tuple(f"c{n:03d}" for n in range(8, 300))
    assert drawn.isdisjoint(k for g in plan.groups for k in g.hidden if g.of == "centre")
    # At most one query per generation and direction (and one beyond), of products drawn.
    assert len(graph.calls) <= 2 * (3 + 1)
    for _direction, keys in graph.calls:
        assert set(keys) <= drawn
    root = _draw(plan)
    links = _links(root)
    assert len(links) == len(drawn) - 1 + len(plan.groups)
    assert links["#more-" + str(centre_groups[1].group)] == (
        "and 292 more of the products made from label centre"
    )
    more = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("and ")]
    assert "and 292 more" in more
    assert len(plan.nodes) < 120, "hundreds of products, a readable drawing"


def test_a_product_reached_twice_is_drawn_once() -> None:
    """Two lots of one flock: the flock once, with a line from each."""
    graph = Graph([("case", "lot1"), ("case", "lot2"), ("lot1", "flock"), ("lot2", "flock")])
    plan = plan_lineage("case", graph.fetch, depth=3)
    assert [n.key for n in plan.columns[-2]] == ["flock"]
    flock = plan.columns[-2][0].id
    assert sorted(e.target for e in plan.edges if e.source == flock) == sorted(
        n.id for n in plan.columns[-1]
    )


def test_generations_beyond_the_depth_are_marked() -> None:
    """A product of the outermost column with more generations beyond says so."""
    graph = Graph([("b", "a"), ("c", "b"), ("d", "c")])
    plan = plan_lineage("b", graph.fetch, depth=1)
    assert [(n.key, n.further) for n in plan.nodes if n.key != "b"] == [
        ("a", False),
        ("c", True),
    ]
    links = _links(_draw(plan))
    assert links["/console/products/c"].endswith("more generations not drawn")
    assert not links["/console/products/a"].endswith("more generations not drawn")


def test_keys_and_labels_with_markup_are_escaped() -> None:
    """Product keys, labels and texts are data: markup in them stays text in the SVG."""
    evil = '01/06901234567892/10/<script>alert("x")</script>&\''
    graph = Graph([(evil, "centre"), ("centre", "<b>parent</b>")])
    plan = plan_lineage("centre", graph.fetch)
    svg = lineage_svg(
        plan,
        status={evil: "recalled"},
        labels={evil: ("lot <s>\"&'", "<i>owner</i> & co")},
        href=lambda key: "/console/products/" + key,
        group_href=lambda group: f"#more-{group}",
        text=TEXT,
    )
    assert "<script" not in svg
    assert "<b>" not in svg
    assert "<i>" not in svg
    assert "<s>" not in svg
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    links = _links(root)
    assert links["/console/products/" + evil] == "lot <s>\"&' <i>owner</i> & co , status recalled"
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert evil in titles
    assert "/console/products/<b>parent</b>" in links


@pytest.mark.parametrize("depth", [0, 7])
def test_depth_is_one_to_six(depth: int) -> None:
    """A depth outside 1-6 is refused."""
    with pytest.raises(ValueError, match="depth"):
        plan_lineage("a", Graph([]).fetch, depth=depth)
