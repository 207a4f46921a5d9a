"""Which node each rank runs on, and bytes by link: intra-node or inter-node (DESIGN §4).

Pure helpers (no process group): ``parallel/comm.py`` all-gathers every worker's :func:`node_key` at setup and
turns the keys into node indices with :func:`node_indices`; the analytic twin (``partition/links.py``) and the
planner take a node map from :func:`block_nodes`, the layout launchers give (consecutive ranks per node).
"""

from __future__ import annotations

import os
import socket

__all__ = ["LINKS", "NODE_MAP_ENV", "block_nodes", "describe_nodes", "link_of", "node_indices", "node_key"]

LINKS = ("intra", "inter")
NODE_MAP_ENV = "GNNPIPE_NODE_OF_RANK"  # e.g. "0,0,1,1": pretend to be 2 nodes x 2 workers on one machine


def node_key(rank: int, world: int) -> str:
    """What names this worker's node: ``$GNNPIPE_NODE_OF_RANK`` (a comma list of node ids, one per rank: a fake
    map for tests and single-machine runs), torchrun's ``GROUP_RANK`` (the node rank of this worker's agent),
    Slurm's ``SLURM_NODEID``, else the host name (mpirun; local spawns are one node)."""
    env = os.environ
    fake = env.get(NODE_MAP_ENV, "").strip()
    if fake:
        ids = [x.strip() for x in fake.split(",")]
        if len(ids) != world or not all(ids):
            raise ValueError(f"${NODE_MAP_ENV}={fake!r} must list one node id per rank ({world}), e.g. 0,0,1,1")
        return f"map:{ids[rank]}"
    for var in ("GROUP_RANK", "SLURM_NODEID"):
        if env.get(var, "").strip():
            return f"{var}:{env[var].strip()}"
    return f"host:{socket.gethostname()}"


def node_indices(keys: list[str]) -> list[int]:
    """Node index of every rank: nodes numbered by their lowest rank (rank 0 is on node 0)."""
    index: dict[str, int] = {}
    return [index.setdefault(k, len(index)) for k in keys]


def block_nodes(world: int, nodes: int) -> list[int]:
    """The node map launchers give ``world`` workers on ``nodes`` nodes: ``world / nodes`` consecutive ranks each
    (torchrun's ``--nproc_per_node``, mpirun's default by-slot mapping)."""
    if nodes < 1 or world % nodes:
        raise ValueError(f"{world} workers cannot be spread evenly over {nodes} nodes")
    per = world // nodes
    return [r // per for r in range(world)]


def link_of(node_of_rank: list[int], a: int, b: int) -> str:
    """``intra`` when ranks ``a`` and ``b`` share a node, else ``inter``."""
    return "intra" if node_of_rank[a] == node_of_rank[b] else "inter"


def describe_nodes(node_of_rank: list[int]) -> str:
    """``node0 ranks 0-1, node1 ranks 2-3``: the ranks of each node, consecutive runs as ranges."""
    parts = []
    for node in sorted(set(node_of_rank)):
        ranks = [r for r, n in enumerate(node_of_rank) if n == node]
        runs: list[list[int]] = []
        for r in ranks:
            if runs and runs[-1][-1] == r - 1:
                runs[-1].append(r)
            else:
                runs.append([r])
        text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
        parts.append(f"node{node} rank{'s' if len(ranks) > 1 else ''} {text}")
    return ", ".join(parts)
