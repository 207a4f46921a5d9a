"""Functions run inside spawned gloo workers by the multi-worker tests (importable by the children)."""

from __future__ import annotations

import os
import signal


def run_engine_configs(cfg_dicts: list[dict], epochs: int) -> list[dict]:
    """Train each config for ``epochs`` epochs on this worker; return losses, grads, weights, bytes, accuracy."""
    from gnnpipe.config import config_from_dict
    from gnnpipe.data import load_graph
    from gnnpipe.parallel.comm import Comm, Topology
    from gnnpipe.parallel.engine import Engine
    from gnnpipe.train.run import shared_plan

    graphs: dict = {}
    out, comm = [], None
    for d in cfg_dicts:
        cfg = config_from_dict(d)
        p = cfg.parallel
        comm = Comm.init(Topology(p.ways, p.stages), timeout_s=60)
        key = repr(cfg.dataset)
        graph = graphs[key] = graphs.get(key) or load_graph(cfg.dataset)
        eng = Engine(cfg, graph, shared_plan(cfg, graph, comm), comm)
        eng.record_grads = True
        losses = [eng.train_epoch(e).loss for e in range(epochs)]
        params = {n: q.detach().clone() for n, q in eng.named_stage_parameters().items()}
        out.append(
            {
                "losses": losses,
                "grads": eng.last_grads,
                "params": params,
                "bytes": eng.comm_bytes_per_epoch(),
                "acc": eng.evaluate(),
                "memory": eng.memory_report(),
            }
        )
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
        real_forward = ex._forward
        state = {"epoch": 0}

        def forward(*a, **k):
            if state["epoch"] == die_at_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_forward(*a, **k)

        ex._forward = forward
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
