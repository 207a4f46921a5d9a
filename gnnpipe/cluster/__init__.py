"""An emulated multi-node cluster on one Linux machine (``scripts/cluster.sh``, DESIGN §4).

``net``: K network namespaces (the nodes) joined by a bridge in a namespace of its own (the switch), every
inter-node link shaped with tbf; ``job``: ``./launch.sh`` on every node with static rendezvous; ``__main__``:
the command line (``up``, ``run``, ``down``). Standard library only: it never imports torch."""
