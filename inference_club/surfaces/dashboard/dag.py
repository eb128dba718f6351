"""Lay out a workflow's steps as a left-to-right graph for the run page. Pure.

A step's column is the length of the longest dependency chain before it; steps of one
column stack in spec order. The page draws boxes and curved edges from these numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NODE_W = 168
NODE_H = 52
GAP_X = 56
GAP_Y = 18
PAD = 8


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    title: str
    kind: str
    status: str
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layout(steps: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, str]]) -> Layout:
    ids = [str(s["id"]) for s in steps]
    needs: dict[str, list[str]] = {i: [] for i in ids}
    for edge in edges:
        if edge["to"] in needs and edge["from"] in needs:
            needs[edge["to"]].append(edge["from"])
    column: dict[str, int] = {}

    def depth(step_id: str, trail: frozenset[str] = frozenset()) -> int:
        if step_id not in column:
            if step_id in trail:  # a cycle cannot pass validation; be safe anyway
                return 0
            column[step_id] = 1 + max((depth(n, trail | {step_id}) for n in needs[step_id]), default=-1)
        return column[step_id]

    rows: dict[int, int] = {}
    nodes: list[Node] = []
    for step in steps:
        step_id = str(step["id"])
        col = depth(step_id)
        row = rows.get(col, 0)
        rows[col] = row + 1
        nodes.append(
            Node(
                id=step_id,
                title=str(step.get("title") or step_id),
                kind=str(step.get("kind", "")),
                status=str(step.get("status", "PENDING")),
                x=PAD + col * (NODE_W + GAP_X),
                y=PAD + row * (NODE_H + GAP_Y),
            )
        )
    at = {n.id: n for n in nodes}
    drawn = []
    for edge in edges:
        a, b = at.get(edge["from"]), at.get(edge["to"])
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
        x2, y2 = b.x, b.y + NODE_H // 2
        bend = max(GAP_X // 2, (x2 - x1) // 2)
        drawn.append(Edge(a.id, b.id, f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 6},{y2}"))
    columns = max(column.values(), default=0) + 1
    height_rows = max(rows.values(), default=1)
    return Layout(
        nodes,
        drawn,
        width=2 * PAD + columns * NODE_W + (columns - 1) * GAP_X,
        height=2 * PAD + height_rows * NODE_H + (height_rows - 1) * GAP_Y,
    )
