"""Reading a user's text file (config, dataset metadata) as UTF-8, with an error that says where it is not."""

from __future__ import annotations

__all__ = ["decode_utf8"]


def decode_utf8(data: bytes) -> tuple[str | None, str]:
    """``(text, "")``, or ``(None, where)`` naming the first byte that is not UTF-8 (a BOM is allowed):
    ``"byte 0x.. at offset .., line .."``."""
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return None, f"byte 0x{data[e.start]:02x} at offset {e.start}, line {line}"
