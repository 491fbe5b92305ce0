"""Graphs for the journeys tests, built from short node lists."""

from __future__ import annotations


def node(node_id, node_type, **config):
    return {"id": node_id, "type": node_type, "config": config, "position": {"x": 0, "y": 0}}


def edge(source, target, handle="next", edge_id=None):
    return {
        "id": edge_id or f"e-{source}-{handle}-{target}",
        "source": source,
        "source_handle": handle,
        "target": target,
    }


def graph(nodes, edges):
    return {"schema": 1, "nodes": nodes, "edges": edges}


def entry(node_id="entry", **trigger):
    return node(node_id, "entry", trigger=trigger or {"kind": "manual"})


def chain(*nodes):
    """The nodes in a line, each "next" exit to the following node."""
    return graph(list(nodes), [edge(a["id"], b["id"]) for a, b in zip(nodes, nodes[1:], strict=False)])
