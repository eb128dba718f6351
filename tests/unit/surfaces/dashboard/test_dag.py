"""The run page's graph layout: columns follow the longest dependency chain."""

from __future__ import annotations

from inference_club.surfaces.dashboard.dag import GAP_X, GAP_Y, NODE_H, NODE_W, PAD, layout


def test_columns_follow_dependencies_and_rows_stack() -> None:
    steps = [
        {"id": "outline", "kind": "inference", "status": "DONE"},
        {"id": "pictures", "kind": "map", "title": "Draw", "status": "RUNNING"},
        {"id": "voice", "kind": "map", "status": "PENDING"},
        {"id": "review", "kind": "gate", "status": "PENDING"},
    ]
    edges = [
        {"from": "outline", "to": "pictures"},
        {"from": "outline", "to": "voice"},
        {"from": "pictures", "to": "review"},
        {"from": "voice", "to": "review"},
    ]
    drawn = layout(steps, edges)
    by_id = {n.id: n for n in drawn.nodes}
    assert [by_id[i].x for i in ("outline", "pictures", "voice", "review")] == [
        PAD,
        PAD + NODE_W + GAP_X,
        PAD + NODE_W + GAP_X,
        PAD + 2 * (NODE_W + GAP_X),
    ]
    assert by_id["pictures"].y < by_id["voice"].y and by_id["pictures"].title == "Draw"
    assert len(drawn.edges) == 4 and all(e.path.startswith("M") for e in drawn.edges)
    assert drawn.width == 2 * PAD + 3 * NODE_W + 2 * GAP_X


def test_a_single_step_and_unknown_edges() -> None:
    drawn = layout([{"id": "only"}], [{"from": "ghost", "to": "only"}])
    assert [(n.id, n.status) for n in drawn.nodes] == [("only", "PENDING")] and drawn.edges == []


def test_a_cycle_does_not_hang_the_layout() -> None:
    # Validation refuses cycles; the layout must still finish if one slipped through.
    drawn = layout([{"id": "a"}, {"id": "b"}], [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}])
    assert sorted(n.id for n in drawn.nodes) == ["a", "b"] and len(drawn.edges) == 2
    assert drawn.width > 0 and drawn.height > 0


def test_a_stack_of_independent_steps_grows_the_height() -> None:
    drawn = layout([{"id": str(i)} for i in range(3)], [])
    assert {n.x for n in drawn.nodes} == {PAD}
    assert [n.y for n in drawn.nodes] == [PAD, PAD + NODE_H + GAP_Y, PAD + 2 * (NODE_H + GAP_Y)]
    assert drawn.height == 2 * PAD + 3 * NODE_H + 2 * GAP_Y and drawn.width == 2 * PAD + NODE_W
