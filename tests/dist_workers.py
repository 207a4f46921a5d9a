"""Functions run inside spawned gloo workers by the multi-worker tests (importable by the children)."""

from __future__ import annotations

import os
import signal


def record_messages(tx) -> dict:
    """Wrap an engine's ``Transfers`` so that every training message of kind layer or graph is kept twice: the
    rows the sender handed to it (before encoding) and the rows the receiver got back (after decoding), each
    list in call order by (peer rank, kind). Transfers between a pair run in the same order on both sides."""
    sent: dict = {}
    received: dict = {}
    real_send, real_recv, real_halo = tx.send_stage, tx.recv_stage, tx.halo

    def keep(book: dict, peer: int, kind: str, tensors) -> None:
        if kind in ("layer", "graph"):
            book.setdefault((peer, kind), []).extend(t.detach().clone() for t in tensors)

    def send_stage(to_stage, tensors, what, *, kind, layer):
        keep(sent, tx.dims.rank(tx.way, to_stage), kind, tensors)
        return real_send(to_stage, tensors, what, kind=kind, layer=layer)

    def recv_stage(from_stage, shapes, what, *, kind, layer, bubble=False):
        got = real_recv(from_stage, shapes, what, kind=kind, layer=layer, bubble=bubble)
        keep(received, tx.dims.rank(tx.way, from_stage), kind, got)
        return got

    def halo(lay, unit, layer, rows, *, forward, kind="graph"):
        got = real_halo(lay, unit, layer, rows, forward=forward, kind=kind)
        for w2 in (w for w in range(tx.dims.ways) if w != tx.way):
            peer = tx.dims.rank(w2, tx.stage)
            keep(sent, peer, kind, [rows[unit.send_fwd[w2] if forward else unit.send_bwd[w2]]])
            keep(received, peer, kind, [got[w2]])
        return got

    tx.send_stage, tx.recv_stage, tx.halo = send_stage, recv_stage, halo
    return {"sent": sent, "received": received}


def run_engine_configs(
    cfg_dicts: list[dict], epochs: int, record_actions: bool = False, messages: bool = False
) -> list[dict]:
    """Train each config for ``epochs`` epochs on this worker; return losses, grads, weights, bytes, accuracy
    (``messages``: also every layer/graph message as sent and as received, :func:`record_messages`)."""
    from gnnpipe.config import config_from_dict
    from gnnpipe.data import load_graph
    from gnnpipe.parallel.comm import Comm
    from gnnpipe.parallel.dims import ParallelDims
    from gnnpipe.parallel.engine import Engine
    from gnnpipe.profile.volumes import volume_by_link, volume_of
    from gnnpipe.train.run import shared_plan

    graphs: dict = {}
    out, comm = [], None
    for d in cfg_dicts:
        cfg = config_from_dict(d)
        comm = Comm.init(ParallelDims.from_config(cfg), timeout_s=60)
        key = repr(cfg.dataset)
        graph = graphs[key] = graphs.get(key) or load_graph(cfg.dataset)
        plan = shared_plan(cfg, graph, comm)
        eng = Engine(cfg, plan.permute(graph), plan, comm)
        eng.record_grads = True
        book = record_messages(eng.tx) if messages else None
        eng.executed = [] if record_actions else None
        comm.log = [] if record_actions else None
        losses = [eng.train_epoch(e).loss for e in range(epochs)]
        vol = volume_of(cfg, graph, plan)
        params = {n: q.detach().clone() for n, q in eng.named_stage_parameters().items()}
        out.append(
            {
                "losses": losses,
                "grads": eng.last_grads,
                "params": params,
                "bytes": {
                    "measured": eng.comm_bytes_per_epoch(),
                    "analytic": {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight},
                },
                "by_link": {
                    "measured": eng.comm_bytes_by_link(),
                    "analytic": volume_by_link(cfg, graph, plan, comm.node_of_rank),
                    "nodes": list(comm.node_of_rank),
                },
                "acc": eng.evaluate(),
                "memory": eng.memory_report(),
                "executed": [str(a) for a in eng.executed] if record_actions else None,
                "comm_log": list(comm.log) if record_actions else None,
                "orders": [eng.schedule(e)[1] for e in range(epochs)],
            }
        )
        out[-1]["eval_bytes"] = comm.sent_by_kind()["eval"]  # one evaluation (above): what it sent
        out[-1]["messages"] = book
    if comm is not None:
        comm.close()
    return out


def train_then_die(cfg_dict: dict, victim: int, die_at_epoch: int) -> str:
    """Train; rank ``victim`` SIGKILLs itself in the middle of epoch ``die_at_epoch`` (inside its forward)."""
    from gnnpipe.config import config_from_dict
    from gnnpipe.parallel.engine import Engine
    from gnnpipe.train.run import make_executor

    cfg = config_from_dict(cfg_dict)
    ex = make_executor(cfg)
    assert isinstance(ex, Engine)
    if ex.comm.rank == victim:
        real_pre = ex.steps.pre
        state = {"epoch": 0}

        def pre(*a, **k):
            if state["epoch"] == die_at_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_pre(*a, **k)

        ex.steps.pre = pre
    for e in range(1000):
        if ex.comm.rank == victim:
            state["epoch"] = e
        ex.train_epoch(e)
    return "finished"  # not reached: the others must fail


def run_training_job(cfg_dict: dict) -> dict:
    """The whole user path of one worker: config -> executor -> trainer (-> trace). Returns the summary."""
    from gnnpipe.config import config_from_dict
    from gnnpipe.train.run import run_training

    return run_training(config_from_dict(cfg_dict, "test")).to_json()


def staged_exchange() -> list:
    """Two workers swap rows and sum a vector with every transfer staged through host buffers (the path gloo
    takes with CUDA tensors, forced here on CPU): the values must arrive exactly."""
    import torch

    from gnnpipe.parallel.comm import Comm
    from gnnpipe.parallel.dims import ParallelDims

    comm = Comm.init(ParallelDims(1, 2, 2, (1, 1)), timeout_s=30, backend="gloo")
    comm.via_host = True
    me, peer = comm.rank, 1 - comm.rank
    got = [torch.empty(3, 2), torch.empty(2)]
    comm.exchange({peer: [torch.full((3, 2), float(me)), torch.arange(2.0) + me]}, {peer: got}, kind="layer")
    pending = comm.exchange({peer: torch.full((4,), 7.0 + me)}, {}, kind="layer", wait=False)
    buf = torch.empty(4)
    comm.exchange({}, {peer: buf}, kind="layer")
    comm.wait_all(pending)
    total = torch.tensor([1.0 + me])
    comm.all_reduce_sum(total, kind="control", group_ranks=[0, 1])
    comm.close()
    return [got[0].tolist(), got[1].tolist(), buf.tolist(), total.tolist()]


def omp_threads() -> tuple[str | None, int]:
    """This worker's OMP_NUM_THREADS as it started, and torch's intra-op thread count."""
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
