"""The parallel degrees of a run, validated once: ways x stages workers, chunks, and the layer split (DESIGN §1).

Everything that needs "which rank is (way, stage)", "which layers does stage s hold" or "how many chunks
does a way own" asks :class:`ParallelDims`; nothing recomputes it. Pure: no processes, no tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from gnnpipe.config import ExperimentConfig
from gnnpipe.partition.stages import split_layers, stage_bounds

__all__ = ["PLACEMENTS", "ParallelDims"]

PLACEMENTS = ("stages", "ways")  # parallel.placement: what consecutive ranks (and so one node) hold


@dataclass(frozen=True)
class ParallelDims:
    """``ways`` (graph-parallel degree) x ``stages`` (layer-parallel degree) workers; ``chunks`` vertex chunks,
    ``chunks / ways`` per way; ``layer_counts[s]`` consecutive GNN layers on stage ``s``.

    Rank layout (``placement``, DESIGN §1): ``stages`` (the default) ``rank = way * stages + stage``: one way's
    stages are consecutive ranks (the ways of one stage are ``stages`` apart); ``ways`` ``rank = stage * ways +
    way``: one stage's ways are consecutive. Launchers put consecutive ranks on one node, so the placement
    decides which transfers cross nodes.
    """

    ways: int
    stages: int
    chunks: int
    layer_counts: tuple[int, ...]
    placement: str = "stages"

    def __post_init__(self) -> None:
        for name in ("ways", "stages", "chunks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ParallelDims.{name} must be an integer >= 1, got {v!r}")
        if self.chunks % self.ways:
            raise ValueError(f"chunks ({self.chunks}) must be a multiple of ways ({self.ways})")
        if len(self.layer_counts) != self.stages or min(self.layer_counts) < 1:
            raise ValueError(f"layer_counts {self.layer_counts} must give each of {self.stages} stages >= 1 layer")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}")

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> ParallelDims:
        """The degrees of ``cfg`` (already validated by config.py) with its layer split."""
        p = cfg.parallel
        if isinstance(p.stage_split, list):
            counts = list(p.stage_split)
        elif p.stage_split == "cost":  # the min-max split over the calibrated layer costs (DESIGN §10)
            from gnnpipe.plan.costs import cost_split_counts

            counts = cost_split_counts(cfg)
        else:
            counts = split_layers(cfg.model.layers, p.stages)
        return cls(p.ways, p.stages, p.chunks, tuple(counts), p.placement)

    # ------------------------------------------------------------------ sizes
    @property
    def world_size(self) -> int:
        return self.ways * self.stages

    @property
    def num_layers(self) -> int:
        return sum(self.layer_counts)

    @property
    def chunks_per_way(self) -> int:
        return self.chunks // self.ways

    # ------------------------------------------------------------------ ranks
    def rank(self, way: int, stage: int) -> int:
        if not (0 <= way < self.ways and 0 <= stage < self.stages):
            raise ValueError(f"(way {way}, stage {stage}) is outside {self.ways} x {self.stages}")
        return stage * self.ways + way if self.placement == "ways" else way * self.stages + stage

    def coords(self, rank: int) -> tuple[int, int]:
        """``(way, stage)`` of ``rank``."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a world of {self.world_size}")
        if self.placement == "ways":
            stage, way = divmod(rank, self.ways)
            return way, stage
        return divmod(rank, self.stages)

    def stage_ranks(self, stage: int) -> list[int]:
        """The ranks holding ``stage``, one per way (they all-reduce weight gradients and exchange halos)."""
        return [self.rank(w, stage) for w in range(self.ways)]

    def way_ranks(self, way: int) -> list[int]:
        """The ranks of one way's pipeline, stage order."""
        return [self.rank(way, s) for s in range(self.stages)]

    # ------------------------------------------------------------------ layers
    def layer_range(self, stage: int) -> tuple[int, int]:
        """``[lo, hi)``: the GNN layers of ``stage`` (stage 0 also holds the encoder, the last one the head)."""
        return stage_bounds(self.layer_counts)[stage]

    def is_first(self, stage: int) -> bool:
        return stage == 0

    def is_last(self, stage: int) -> bool:
        return stage == self.stages - 1

    def describe(self, rank: int) -> str:
        way, stage = self.coords(rank)
        lo, hi = self.layer_range(stage)
        return f"rank {rank} (way {way}, stage {stage}, layers {lo}-{hi - 1})"
