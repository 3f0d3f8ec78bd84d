"""The lineage graph of the console's product dossier: a server-made SVG, no JavaScript.

:func:`plan_lineage` decides what is drawn: the product in the middle, the products it was made
from to the left (one column per generation) and the products made from it to the right, up to
``depth`` generations each way. A large lineage stays readable by two rules:

* each product shows at most ``limit`` of its parents (on the left side) or children (on the
  right side); the rest become one node "and 37 more" (a *group*, listed in full by the page);
* a column holds at most ``column_limit`` products; products that do not fit go to their
  product's group too.

A product reached twice (two lots from one flock) is drawn once, with an edge from each. It
reads the graph through ``fetch(keys, direction)``, called once per generation and direction
with exactly the products it expands, so a caller answers from the database one query a level.

:func:`lineage_svg` draws a plan: every product a link (an ``<a href>`` inside the SVG, in the
keyboard's tab order, named by its label, owner and status), filled by its status *and* marked
with a sign and a border pattern of its own (WCAG 1.4.1: not by colour alone), the product of
the page outlined and not a link (its id is :data:`CURRENT_ID`). All text is escaped; the
layout is pure and deterministic.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Final, Literal

__all__ = [
    "CURRENT_ID",
    "STATUSES",
    "Direction",
    "Edge",
    "Fetch",
    "GraphText",
    "Node",
    "Plan",
    "StatusStyle",
    "lineage_svg",
    "plan_lineage",
]

Direction = Literal["parents", "children"]
#: ``fetch(keys, direction)``: every parent (or child) of each of ``keys`` that has any.
Fetch = Callable[[Sequence[str], Direction], Mapping[str, Sequence[str]]]

#: The id of the page's product's box: a link to ``#lineage-current`` scrolls the graph to it.
CURRENT_ID: Final = "lineage-current"
#: Default rules: products shown per product and direction, products per column.
LIMIT: Final = 8
COLUMN_LIMIT: Final = 24
MAX_DEPTH: Final = 6


@dataclass(frozen=True, slots=True)
class Node:
    """A box of the graph: a product (``key``) or a group of products not drawn (``hidden``,
    the parents or children of ``of`` beyond the limits).

    ``level`` is the generation: negative to the left (made from), positive to the right (made
    into), 0 the product of the page. ``further`` marks a product of the outermost column that
    has more generations beyond it.
    """

    id: int
    level: int
    key: str | None
    hidden: tuple[str, ...] = ()
    of: str | None = None
    group: int | None = None
    further: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    """A line from the node ``source`` (made earlier, on the left) to ``target``."""

    source: int
    target: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`lineage_svg` draws: nodes by column, edges, and the groups not drawn."""

    product: str
    depth: int
    columns: Mapping[int, tuple[Node, ...]]
    edges: tuple[Edge, ...]

    @property
    def nodes(self) -> list[Node]:
        """Every node, nearest generations first (0, -1, 1, -2, 2, ...)."""
        levels = sorted(self.columns, key=lambda level: (abs(level), level))
        return [node for level in levels for node in self.columns[level]]

    @property
    def keys(self) -> list[str]:
        """Every product drawn, the page's product first, then nearest generations first."""
        return [node.key for node in self.nodes if node.key is not None]

    @property
    def groups(self) -> list[Node]:
        """The "and N more" nodes, in the order of their ``group`` numbers."""
        found = [node for node in self.nodes if node.key is None]
        return sorted(found, key=lambda node: node.group or 0)


@dataclass
class _Builder:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    groups: int = 0

    def add(
        self, level: int, key: str | None, hidden: tuple[str, ...] = (), of: str | None = None
    ) -> Node:
        group = None
        if key is None:
            self.groups += 1
            group = self.groups
        node = Node(len(self.nodes), level, key, hidden, of, group)
        self.nodes.append(node)
        return node

    def link(self, near: Node, far: Node, sign: int) -> None:
        # Edges run from what was made first (left) to what was made from it (right).
        self.edges.append(Edge(far.id, near.id) if sign < 0 else Edge(near.id, far.id))


def _side(
    build: _Builder,
    centre: Node,
    fetch: Fetch,
    direction: Direction,
    *,
    depth: int,
    limit: int,
    column_limit: int,
) -> dict[int, list[Node]]:
    sign = -1 if direction == "parents" else 1
    placed: dict[str, Node] = {centre.key or "": centre}
    columns: dict[int, list[Node]] = {}
    frontier = [centre]
    for generation in range(1, depth + 1):
        if not frontier:
            break
        found = fetch([node.key or "" for node in frontier], direction)
        column: list[Node] = []
        drawn = 0
        next_frontier: list[Node] = []
        for near in frontier:
            hidden: list[str] = []
            shown = 0
            for key in found.get(near.key or "", ()):
                node = placed.get(key)
                if shown >= limit or (node is None and drawn >= column_limit):
                    hidden.append(key)
                    continue
                if node is None:
                    node = build.add(sign * generation, key)
                    placed[key] = node
                    column.append(node)
                    next_frontier.append(node)
                    drawn += 1
                build.link(near, node, sign)
                shown += 1
            if hidden:
                group = build.add(sign * generation, None, tuple(hidden), near.key)
                column.append(group)
                build.link(near, group, sign)
        if column:
            columns[sign * generation] = column
        frontier = next_frontier
    if frontier:
        # One more look outwards: a product with more generations beyond the depth says so.
        beyond = fetch([node.key or "" for node in frontier], direction)
        for node in frontier:
            if beyond.get(node.key or ""):
                marked = Node(node.id, node.level, node.key, further=True)
                placed[node.key or ""] = marked
                build.nodes[node.id] = marked
                column = columns[node.level]
                column[column.index(node)] = marked
    return columns


def plan_lineage(
    product: str,
    fetch: Fetch,
    *,
    depth: int = 3,
    limit: int = LIMIT,
    column_limit: int = COLUMN_LIMIT,
) -> Plan:
    """Plan the graph of ``product``: ``depth`` generations each way (see the module docstring).

    ``fetch`` is called at most ``depth + 1`` times per direction.
    """
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 1 to {MAX_DEPTH}, got {depth}")
    if limit < 1 or column_limit < 1:
        raise ValueError("limit and column_limit must be at least 1")
    build = _Builder()
    centre = build.add(0, product)
    columns: dict[int, list[Node]] = {0: [centre]}
    directions: tuple[Direction, ...] = ("parents", "children")
    for direction in directions:
        columns.update(
            _side(
                build,
                centre,
                fetch,
                direction,
                depth=depth,
                limit=limit,
                column_limit=column_limit,
            )
        )
    # Nodes may have been replaced (``further``): columns hold the final ones.
    final = {node.id: node for node in build.nodes}
    return Plan(
        product=product,
        depth=depth,
        columns={
            level: tuple(final[node.id] for node in nodes)
            for level, nodes in sorted(columns.items())
        },
        edges=tuple(build.edges),
    )


@dataclass(frozen=True, slots=True)
class StatusStyle:
    """How a status looks: fill and border colours, its sign, the border's dash pattern."""

    fill: str
    stroke: str
    sign: str
    dash: str | None = None


#: Every status a node may have. The scan's verdicts, and ``unchecked`` for a product whose
#: checks were not run for the graph (only whether a recall reaches it was looked up).
#: Borders have at least 3:1 contrast on white (WCAG 1.4.11); text is #1f2328 on each fill.
STATUSES: Final[Mapping[str, StatusStyle]] = {
    "verified": StatusStyle("#dafbe1", "#116329", "✔"),
    "integrity_failure": StatusStyle("#ffebe9", "#a40e26", "✖", "2 2"),
    "recalled": StatusStyle("#fff8c5", "#7d4e00", "⚠", "8 4"),
    "suspect_copy": StatusStyle("#fff1e5", "#953800", "?", "8 4 2 4"),
    "pending": StatusStyle("#f3f4f6", "#424a53", "…", "1 3"),
    "unchecked": StatusStyle("#ffffff", "#57606a", "○", "1 3"),
}


@dataclass(frozen=True, slots=True)
class GraphText:
    """The words of a graph in the page's language.

    ``levels`` names each generation's column (``-1``: "made from", ``1``: "made into", ...);
    ``statuses`` names each of :data:`STATUSES`; ``more`` is the text of a group node ("and
    {n} more") and ``more_parents`` / ``more_children`` the rest of its accessible name (with
    ``{product}``: "of the products made from {product}"); ``further`` is added to the name of
    a product with more generations beyond.
    """

    title: str
    current: str
    levels: Mapping[int, str]
    statuses: Mapping[str, str]
    more: str
    more_parents: str
    more_children: str
    further: str


NODE_W: Final = 180
NODE_H: Final = 42
COLUMN_GAP: Final = 56
ROW_GAP: Final = 12
PAD: Final = 8
HEAD: Final = 28
_FONT: Final = 13
_SMALL: Final = 11


def _width(text: str, size: float) -> float:
    """The rough width of ``text`` in px: wide (CJK) characters 1 em, others 0.6 em."""
    return sum(
        size if unicodedata.east_asian_width(ch) in ("W", "F") else size * 0.6 for ch in text
    )


def _fit(text: str, size: float, room: float) -> str:
    """``text``, cut with "…" to about ``room`` px."""
    if _width(text, size) <= room:
        return text
    while text and _width(text + "…", size) > room:
        text = text[:-1]
    return text + "…"


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    bend = max(COLUMN_GAP / 2, abs(x2 - x1) / 2)
    return (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )


def lineage_svg(
    plan: Plan,
    *,
    status: Mapping[str, str],
    labels: Mapping[str, tuple[str, str]],
    href: Callable[[str], str],
    group_href: Callable[[int], str],
    text: GraphText,
) -> str:
    """Draw ``plan`` as SVG text.

    ``status`` gives each product's key in :data:`STATUSES` (``unchecked`` when missing),
    ``labels`` its two lines (what and whose; the key when missing), ``href`` the link to a
    product's page and ``group_href`` the link to the list of a group's products.
    """
    canvas = _Canvas(plan, status, labels, href, group_href, text)
    levels = sorted(plan.columns)
    rows = max(len(nodes) for nodes in plan.columns.values())
    pitch = NODE_H + ROW_GAP
    width = PAD * 2 + len(levels) * NODE_W + (len(levels) - 1) * COLUMN_GAP
    height = PAD * 2 + HEAD + rows * pitch - ROW_GAP
    where: dict[int, tuple[float, float]] = {}
    for column, level in enumerate(levels):
        nodes = plan.columns[level]
        top = PAD + HEAD + (rows - len(nodes)) * pitch / 2
        for row, node in enumerate(nodes):
            where[node.id] = (PAD + column * (NODE_W + COLUMN_GAP), top + row * pitch)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="group" '
            f'aria-label="{escape(text.title)}" font-family="system-ui, sans-serif" '
            f'font-size="{_FONT}">'
        ),
    ]
    for column, level in enumerate(levels):
        name = text.current if level == 0 else text.levels.get(level, "")
        x = PAD + column * (NODE_W + COLUMN_GAP) + NODE_W / 2
        parts.append(
            f'<text x="{x:.1f}" y="{PAD + 14}" text-anchor="middle" fill="#57606a" '
            f'font-size="{_SMALL + 1}" aria-hidden="true">{escape(name)}</text>'
        )
    parts.append('<g fill="none" stroke="#8c959f" stroke-width="1.5" aria-hidden="true">')
    for edge in plan.edges:
        (x1, y1), (x2, y2) = where[edge.source], where[edge.target]
        parts.append(f'<path d="{_curve(x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2)}"/>')
    parts.append("</g>")
    for node in plan.nodes:
        x, y = where[node.id]
        parts.append(canvas.group(node, x, y) if node.key is None else canvas.product(node, x, y))
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Canvas:
    """What drawing a node needs besides the node and its place."""

    plan: Plan
    status: Mapping[str, str]
    labels: Mapping[str, tuple[str, str]]
    href: Callable[[str], str]
    group_href: Callable[[int], str]
    text: GraphText

    def product(self, node: Node, x: float, y: float) -> str:
        """A product's box: a link to its page, or the outlined box of the page's product.

        A link is named by the text it shows (WCAG 2.5.3, label in name) followed by its
        status, from a text the box does not show (``aria-labelledby``).
        """
        key = node.key or ""
        ident = f"lineage-n{node.id}"
        state = self.status.get(key, "unchecked")
        style = STATUSES.get(state, STATUSES["unchecked"])
        main, second = self.labels.get(key, (key, ""))
        shown_main, shown_second = _fit(main, _FONT, NODE_W - 34), _fit(second, _SMALL, NODE_W - 34)
        current = key == self.plan.product
        more = (
            self.text.statuses.get(state, state),
            self.text.current if current else "",
            self.text.further if node.further else "",
        )
        status = ", " + ", ".join(word for word in more if word)
        dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
        weight = ' font-weight="700"' if current else ""
        body = [
            (
                f'<rect class="box" x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" '
                f'rx="6" fill="{style.fill}" stroke="{style.stroke}" stroke-width="2"{dash}/>'
            ),
            (
                f'<text x="{x + 8:.1f}" y="{y + 18:.1f}" fill="{style.stroke}" font-size="15" '
                f'font-weight="700" aria-hidden="true">{escape(style.sign)}</text>'
            ),
            # One text with both lines, the second after a space: read as the box shows it.
            (
                f'<text id="{ident}-a" x="{x + 28:.1f}" y="{y + 18:.1f}" fill="#1f2328">'
                f"<tspan{weight}>{escape(shown_main)}</tspan>"
                # (back by the width of the space, which keeps the two lines apart when read)
                f'<tspan x="{x + 25:.1f}" dy="16" fill="#424a53" font-size="{_SMALL}"> '
                f"{escape(shown_second)}</tspan></text>"
            ),
            f'<text id="{ident}-c" display="none">{escape(status)}</text>',
        ]
        if node.further:
            outer = x - 14 if node.level < 0 else x + NODE_W + 4
            body.append(
                f'<text x="{outer:.1f}" y="{y + NODE_H / 2 + 4:.1f}" fill="#57606a" '
                'aria-hidden="true">⋯</text>'
            )
        names = f"{ident}-a {ident}-c"
        if current:
            ring = (
                f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="{NODE_W + 8}" '
                f'height="{NODE_H + 8}" rx="9" fill="none" stroke="#0550ae" stroke-width="3"/>'
            )
            return (
                f'<g class="current" id="{CURRENT_ID}" role="img" aria-labelledby="{names}">'
                f"{ring}{''.join(body)}</g>"
            )
        return (
            f'<a class="node" href="{escape(self.href(key))}" aria-labelledby="{names}">'
            f"<title>{escape(key)}</title>{''.join(body)}</a>"
        )

    def group(self, node: Node, x: float, y: float) -> str:
        """A group's box: "and N more", a link to the list of its products, named by what it
        shows followed by whose parents or children they are."""
        ident = f"lineage-n{node.id}"
        template = self.text.more_parents if node.level < 0 else self.text.more_children
        of = node.of or ""
        whose = template.format(product=self.labels.get(of, (of, ""))[0])
        more = _fit(self.text.more.format(n=len(node.hidden)), _FONT, NODE_W - 12)
        return (
            f'<a class="node more" href="{escape(self.group_href(node.group or 0))}" '
            f'aria-labelledby="{ident}-a {ident}-c">'
            f'<rect class="box" x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" '
            'rx="6" fill="#f6f8fa" stroke="#57606a" stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text id="{ident}-a" x="{x + NODE_W / 2:.1f}" y="{y + NODE_H / 2 + 5:.1f}" '
            f'text-anchor="middle" fill="#0550ae">{escape(more)}</text>'
            f'<text id="{ident}-c" display="none">{escape(whose)}</text></a>'
        )
