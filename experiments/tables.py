"""Where a benchmark's rows go: ``<stem>.json`` (``{"meta", "runs"}``) and ``<stem>.csv`` in one folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def write_runs(folder: Path, stem: str, rows: list[dict], meta: dict, keys: list[str] | None = None) -> None:
    """Every row (all fields) in the JSON; in the CSV the columns ``keys`` (default: the first row's fields)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    with open(folder / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys or list(rows[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
