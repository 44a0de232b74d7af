"""The bot's default avatar, drawn here (a PNG written by hand: no image library for 96×96 pixels):
a white « E » on the blue of French school signage."""

from __future__ import annotations

import struct
import zlib

SIZE = 96
BLUE, WHITE = (0x1F, 0x4E, 0x8C), (0xFF, 0xFF, 0xFF)


def _letter(x: int, y: int) -> bool:
    """An « E » in the middle third: a stem and three bars."""
    left, right, top, bottom, thick = 30, 68, 22, 74, 9
    if not (left <= x < right and top <= y < bottom):
        return False
    stem = x < left + thick
    bars = any(t <= y < t + thick for t in (top, (top + bottom - thick) // 2, bottom - thick))
    return stem or (bars and (x < right - 6 or y < top + thick or y >= bottom - thick))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def default_avatar() -> bytes:
    rows = b"".join(b"\x00" + b"".join(bytes(WHITE if _letter(x, y) else BLUE) for x in range(SIZE))
                    for y in range(SIZE))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)  # 8-bit RGB
    image = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + image
