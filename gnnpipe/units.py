"""Human-readable byte counts, one convention everywhere (decimal: 1 MB = 10^6 B, as the paper reports)."""

from __future__ import annotations

__all__ = ["format_bytes"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3f} {unit}"
        n /= 1000.0
    return f"{n:.3f} TB"
