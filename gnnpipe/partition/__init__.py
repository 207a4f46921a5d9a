"""Partitioning: vertex parts (METIS), the chunk plan of DESIGN §2, layer -> stage balancing, plan statistics."""

from gnnpipe.partition.chunker import (
    PLAN_VERSION,
    ChunkPlan,
    PlanError,
    PlanSpec,
    build_plan,
    get_or_build_plan,
    load_plan,
    plan_from_parts,
    save_plan,
)
from gnnpipe.partition.metis import partition
from gnnpipe.partition.stages import split_layers, stage_bounds
from gnnpipe.partition.stats import (
    CommVolume,
    PartStats,
    PlanStats,
    analytic_volume,
    authors_graph_estimate,
    authors_pipeline_estimate,
    format_plan_report,
    plan_stats,
)

__all__ = [
    "PLAN_VERSION",
    "ChunkPlan",
    "CommVolume",
    "PartStats",
    "PlanError",
    "PlanSpec",
    "PlanStats",
    "analytic_volume",
    "authors_graph_estimate",
    "authors_pipeline_estimate",
    "build_plan",
    "format_plan_report",
    "get_or_build_plan",
    "load_plan",
    "partition",
    "plan_from_parts",
    "plan_stats",
    "save_plan",
    "split_layers",
    "stage_bounds",
]
