"""``gnnpipe profile``: per-epoch communication by strategy and kind, analytic and measured side by side.

Volumes are those of the configured ``parallel.compress`` (``parallel.compress=int8`` as an override shows
the compressed traffic; DESIGN §4). With ``--nodes K`` each strategy's analytic bytes are also split into
intra- and inter-node for the configured ``parallel.placement`` (consecutive ranks on a node)."""

from __future__ import annotations

import json
from pathlib import Path

from gnnpipe.config import ConfigError, ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.parallel.nodes import block_nodes
from gnnpipe.profile.volumes import Strategy, strategies_for, volume_by_link, volume_of, with_degrees
from gnnpipe.units import format_bytes

__all__ = ["profile_table", "profile"]

KINDS = ("layer", "graph", "weight")


def profile(
    cfg: ExperimentConfig, graph: Graph, *, workers: int, measure_epochs: int = 0, nodes: int = 1
) -> list[dict]:
    """One row per strategy: degrees, analytic bytes per kind, and (when measuring) measured bytes; on ``nodes``
    > 1 nodes also ``by_link``: the analytic bytes per kind split into ``intra``/``inter``-node."""
    from gnnpipe.train.run import plan_for

    if nodes < 1 or workers % nodes:
        raise ConfigError(f"--nodes {nodes}: allowed: a positive divisor of the {workers} workers")
    rows = []
    for s in strategies_for(cfg, workers):
        scfg = with_degrees(cfg, s)
        plan = plan_for(scfg, graph)
        vol = volume_of(scfg, graph, plan)
        row = {
            "strategy": s.name,
            "ways": s.ways,
            "stages": s.stages,
            "chunks": s.chunks,
            "compress": scfg.parallel.compress,
            "analytic": {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight},
        }
        if nodes > 1:
            row["placement"], row["nodes"] = scfg.parallel.placement, nodes
            row["by_link"] = volume_by_link(scfg, graph, plan, block_nodes(workers, nodes))
        if measure_epochs:
            from gnnpipe.profile.measure import measure_bytes

            m = measure_bytes(scfg, measure_epochs)
            row["measured"] = m["cluster"]
            row["measured_per_worker"] = m["per_worker"]
        rows.append(row)
    return rows


def _total(d: dict) -> int:
    return sum(d[k] for k in KINDS)


def profile_table(rows: list[dict]) -> str:
    base = _total(rows[0]["analytic"]) or 1
    how = rows[0].get("compress", "none")
    lines = [
        f"Per-epoch communication, cluster-wide (training only; parallel.compress={how}; analytic | measured by "
        "comm.py)"
    ]
    head = f"{'strategy':<11}{'W x S, C':<12}" + "".join(f"{k:>28}" for k in (*KINDS, "total")) + f"{'ratio':>9}"
    lines.append(head)
    for r in rows:
        a, m = r["analytic"], r.get("measured")
        cells = []
        for k in (*KINDS, "total"):
            av = _total(a) if k == "total" else a[k]
            mv = (_total(m) if k == "total" else m[k]) if m else None
            cells.append(f"{format_bytes(av):>13} | {format_bytes(mv) if m else '-':>12}")
        deg = f"{r['ways']}x{r['stages']}, {r['chunks']}"
        lines.append(
            f"{r['strategy']:<11}{deg:<12}" + "".join(f"{c:>28}" for c in cells) + f"{_total(a) / base:>8.3f}x"
        )
        if "by_link" in r:
            parts = [f"{k} {format_bytes(r['by_link'][k]['inter'])}" for k in KINDS]
            inter = sum(r["by_link"][k]["inter"] for k in KINDS)
            lines.append(
                f"{'':<23}inter-node ({r['nodes']} nodes, placement {r['placement']}): {', '.join(parts)}; "
                f"total {format_bytes(inter)} of {format_bytes(_total(a))}"
            )
        if "measured_per_worker" in r:
            per = [_total(w) for w in r["measured_per_worker"]]
            lines.append(f"{'':<23}per worker sent: " + ", ".join(format_bytes(b) for b in per))
    return "\n".join(lines)


def write_json(rows: list[dict], path: str | Path, workers: int) -> None:
    out = {"workers": workers, "strategies": {r["strategy"]: r for r in rows}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))


__all__ += ["write_json", "Strategy"]
