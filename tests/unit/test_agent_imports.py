"""The agent imports only the tunnel protocol and small shared types from the hub's package.

Followed transitively: a shared module that starts importing the hub's services drags them
into the agent, and fails here. docs/architecture.md states the rule.
"""

from __future__ import annotations

from tests.unit.import_graph import import_graph

AGENT = "inference_club.agent"

#: What the agent may reach outside its own package, and why.
ALLOWED = {
    "inference_club": "the package's version, sent in the heartbeat and the tunnel hello",
    "inference_club.tunnel.protocol": "the tunnel's frames",
    "inference_club.tunnel.mux": "the tunnel's streams",
    "inference_club.domain.heartbeat": "the heartbeat body, one model for both sides",
    "inference_club.domain.service_types": "the service types a heartbeat declares",
    "inference_club.domain.http_headers": "the hop-by-hop header set",
    "inference_club.netpool": "HTTP client pool limits",
    "inference_club.redact": "secrets kept out of log lines",
    "inference_club.tunnel.traffic": "the tunnel's byte counts, for metrics",
    "inference_club.telemetry.tally": "metric counters and histograms shared with the hub",
    "inference_club.telemetry.logformat": "the log line format (text or JSON) shared with the hub",
    "inference_club.http1": "the lean HTTP/1.1 transport to engines, shared with the hub",
    "inference_club.fdlimit": "raising the open-file limit at start, as the hub does",
    "inference_club.heap": "freezing what startup built out of the collector's walks, as the hub does",
    "inference_club.http_server": "uvicorn's HTTP protocol sending an answer's head with its body, as the hub's",
    "inference_club.waiting": "bounded event waits that keep a cancel (no wait_for), as the hub's",
}


def _is_agent(module: str) -> bool:
    return module == AGENT or module.startswith(AGENT + ".")


def reached_from_agent(graph: dict[str, set[str]]) -> dict[str, str]:
    """Each module outside the agent that the agent reaches → the agent module it came through."""
    reached: dict[str, str] = {}
    frontier = [(m, m) for m in sorted(graph) if _is_agent(m)]
    seen = {m for m, _ in frontier}
    while frontier:
        module, origin = frontier.pop()
        for target in sorted(graph.get(module, ())):
            if target in seen:
                continue
            seen.add(target)
            if not _is_agent(target):
                reached[target] = origin
            frontier.append((target, origin))
    return reached


def test_the_agent_reaches_only_the_allowed_modules() -> None:
    reached = reached_from_agent(import_graph())
    outside = {module: origin for module, origin in reached.items() if module not in ALLOWED}
    assert not outside, "the agent imports beyond its allow-list: " + ", ".join(
        f"{module} (through {origin})" for module, origin in sorted(outside.items())
    )


def test_the_walk_follows_imports_transitively() -> None:
    graph = {
        "inference_club.agent.x": {"inference_club.domain.heartbeat"},
        "inference_club.domain.heartbeat": {"inference_club.services.jobs"},
        "inference_club.services.jobs": set(),
    }
    assert reached_from_agent(graph) == {
        "inference_club.domain.heartbeat": "inference_club.agent.x",
        "inference_club.services.jobs": "inference_club.agent.x",
    }
