"""A worker's state as the trainer sees it: weight snapshots for best-valid tracking, and where its memory goes.

The memory report (DESIGN §7) explains a worker's bytes by kind -- graph and plan structures, features and
labels, weights and optimizer state, history, tensors saved for backward (measured by autograd's pack hook in
the first epoch), in-flight transfer buffers, evaluation buffers -- next to the measured peak growth of each
phase (setup, first training epoch, first evaluation) from :class:`gnnpipe.memory.MemoryProbe`.
"""

from __future__ import annotations

import dataclasses

import torch

from gnnpipe.memory import MemoryProbe, tensor_bytes
from gnnpipe.train.checkpoint import CheckpointError
from gnnpipe.train.executor import Executor

__all__ = ["StageState", "structure_bytes"]


def structure_bytes(obj) -> int:
    """Bytes of the tensors a layout object holds (units, remotes, sparse operators), recursively."""
    if isinstance(obj, torch.Tensor):
        if obj.layout == torch.sparse_csr:
            return tensor_bytes(obj.crow_indices(), obj.col_indices(), obj.values())
        return tensor_bytes(obj)
    if isinstance(obj, (list, tuple)):
        return sum(structure_bytes(v) for v in obj)
    if isinstance(obj, dict):
        return sum(structure_bytes(v) for v in obj.values())
    if dataclasses.is_dataclass(obj):
        return sum(structure_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, type):  # SparseOp and the like: what they hold
        return sum(structure_bytes(v) for v in vars(obj).values())
    return 0


class StageState(Executor):
    """Mixin of :class:`~gnnpipe.parallel.engine.Engine`: expects ``params``, ``named_params``, ``optimizer``,
    ``layout``, ``hist``, ``inbox``, ``steps``, ``tx``, ``evaluator``, ``probe``, ``masks`` and ``saved_bytes`` (the
    largest of the first two epochs run)."""

    probe: MemoryProbe
    saved_bytes: dict[str, int] | None = None
    saved_epochs: int = 0  # epochs measured for saved_bytes (the largest of the first two counts)

    def named_stage_parameters(self) -> dict[str, torch.nn.Parameter]:
        """This worker's parameters under their names in the whole model."""
        return dict(self.named_params)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: q.detach().clone() for n, q in self.named_params.items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, q in self.named_params.items():
                q.copy_(state[n])

    def checkpoint_state(self) -> dict:
        """This stage's weights (by model name), Adam state and history ``Z`` (and ``H`` when separate).
        Cross-chunk gradient lives within an epoch only (``GradInbox``): nothing to save between epochs."""
        h = self.hist
        self.inbox.end_epoch()  # asserts that the epoch is over
        return {
            "weights": self.snapshot(),
            "optimizer": self.optimizer.state_dict(),
            "history_Z": list(h.Z),
            "history_H": list(h.H) if h.separate else [],
        }

    def load_checkpoint_state(self, state: dict) -> None:
        h = self.hist
        saved = [*state["history_Z"], *state["history_H"]]
        mine = [*h.Z, *(h.H if h.separate else [])]
        if set(state["weights"]) != set(self.named_params) or [t.shape for t in saved] != [t.shape for t in mine]:
            raise CheckpointError("checkpoint shard does not hold this stage's weights and history shapes")
        self.restore(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            for dst, src in zip(mine, saved, strict=True):
                dst.copy_(src)

    def memory_phase(self, name: str) -> None:
        self.probe.phase(name)

    def memory_report(self) -> dict[str, int]:
        """Bytes by kind this worker holds, and the measured peak growth of each phase so far."""
        opt_state = sum(
            tensor_bytes(v) for st in self.optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)
        )
        s = self.steps
        out = {
            "graph_structures": structure_bytes(self.layout) + structure_bytes(getattr(self, "_exact", None)),
            "features_labels": tensor_bytes(s.x, s.y) + sum(tensor_bytes(m) for m in (self.masks or ())),
            "weights_optimizer": 2 * tensor_bytes(*self.params) + opt_state,  # weights, gradients, Adam moments
            **self.hist.nbytes(),
            **self.inbox.nbytes(),
            "in_flight_max": self.tx.max_in_flight,
            "eval_buffers": self.evaluator.buffer_bytes(),
        }
        if self.saved_bytes is not None:
            out.update(self.saved_bytes)
        return {**out, **self.probe.report()}
