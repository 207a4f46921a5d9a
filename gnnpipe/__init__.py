"""GNNPipe: layer-level pipelined model parallelism for full-graph training of deep GNNs."""

__version__ = "0.1.0"
