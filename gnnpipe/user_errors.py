"""The exception types that mean "the user's input is wrong" (printed as one line by the CLI, no traceback,
exit code 2): a bad config, dataset, plan, checkpoint or output path, a world that does not match the config,
and a run whose loss or gradients became non-finite (a learning rate or data problem, named by epoch and layer)."""

from gnnpipe.config import ConfigError
from gnnpipe.data.graph import GraphError
from gnnpipe.parallel.comm import CommError
from gnnpipe.partition.chunker import PlanError
from gnnpipe.train.checkpoint import CheckpointError
from gnnpipe.train.trainer import NonFiniteError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    GraphError,
    PlanError,
    CommError,
    CheckpointError,
    NonFiniteError,
)
