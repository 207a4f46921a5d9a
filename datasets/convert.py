"""Convert a dataset into the GNNPipe authors' binary format (or into .npz).

Examples (from the repository root)::

    python datasets/convert.py --from planetoid --src datasets/planetoid/Cora --to binary --out data/cora
    python datasets/convert.py --from ogb --src ~/ogb --name ogbn-arxiv --to binary --out data/arxiv
    python datasets/convert.py --from npz --src amazon_electronics_computers.npz --to binary --out data/computers

The graph goes through the same preprocessing as training (``gnnpipe.data.load_graph``): symmetrised
without self-loops or duplicate edges unless ``--directed``; ``--feature-norm`` row-normalises features.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

try:
    import gnnpipe  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnnpipe.data import GraphError, load_graph, write_binary, write_npz
from gnnpipe.data.graph import Graph


def _dataset_config(args: argparse.Namespace) -> types.SimpleNamespace:
    """A DatasetConfig-shaped namespace for ``load_graph``."""
    src = Path(args.src)
    root, name, path = str(src), args.name, None
    if args.fmt in ("planetoid", "ogb") and name is None:  # --src names the dataset directory itself
        root = str(src.parent)
        name = src.name.lower() if args.fmt == "planetoid" else src.name.replace("_", "-")
    elif args.fmt in ("npz", "binary"):
        name, path = args.fmt, str(src)
    if args.fmt == "ogb" and not name.startswith("ogbn-"):
        raise GraphError(f"--name {name!r}: expected an OGB node-property dataset name such as ogbn-arxiv")
    return types.SimpleNamespace(
        name=name,
        root=root,
        path=path,
        feature_norm=args.feature_norm,
        undirected=not args.directed,
        num_nodes=0,
        avg_degree=0.0,
        num_features=0,
        num_classes=0,
        seed=args.seed,
    )


def _summary(g: Graph) -> str:
    split = "/".join(str(int(m.sum())) for m in (g.train_mask, g.val_mask, g.test_mask))
    kind = "multi-label" if g.multi_label else "single-label"
    return (
        f"{g.name}: {g.num_nodes} vertices, {g.num_edges} edges, {g.num_features} features, "
        f"{g.num_classes} classes ({kind}), train/valid/test {split}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="fmt", required=True, choices=["planetoid", "ogb", "npz", "binary"])
    p.add_argument("--src", required=True, help="planetoid/ogb: the dataset directory or its root; npz: the file")
    p.add_argument("--name", help="planetoid/ogb dataset name (cora, ogbn-arxiv, ...) when --src is the root")
    p.add_argument("--to", dest="target", default="binary", choices=["binary", "npz"])
    p.add_argument("--out", required=True, help="output directory (binary) or file (npz)")
    p.add_argument("--directed", action="store_true", help="keep edges as stored (default: symmetrise)")
    p.add_argument("--feature-norm", action="store_true", help="row-normalise features")
    p.add_argument("--seed", type=int, default=0, help="seed of the 60/20/20 split of an npz without one")
    args = p.parse_args(argv)
    try:
        g = load_graph(_dataset_config(args))
        out = write_binary(g, args.out) if args.target == "binary" else write_npz(g, args.out)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{_summary(g)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
