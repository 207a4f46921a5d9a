"""The exception types that mean "the user's input is wrong" (printed as one line by the CLI, no traceback)."""

from gnnpipe.config import ConfigError
from gnnpipe.data.graph import GraphError
from gnnpipe.parallel.comm import CommError
from gnnpipe.partition.chunker import PlanError
from gnnpipe.train.checkpoint import CheckpointError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, GraphError, PlanError, CommError, CheckpointError)
