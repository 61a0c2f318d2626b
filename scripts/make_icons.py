"""Draw the relay's app icons (relay/static/icon-192.png, icon-512.png) without any image
library: a speech bubble on the brand blue, kept inside the maskable safe zone."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

BLUE, WHITE = (31, 111, 235), (255, 255, 255)
STATIC = Path(__file__).resolve().parents[1] / "relay" / "static"


def inside_bubble(x: float, y: float) -> bool:
    """Unit coordinates (0..1): a rounded box with a tail at its lower left."""
    left, top, right, bottom, r = 0.24, 0.28, 0.76, 0.64, 0.08
    cx = min(max(x, left + r), right - r)
    cy = min(max(y, top + r), bottom - r)
    if left <= x <= right and top <= y <= bottom and (x - cx) ** 2 + (y - cy) ** 2 <= r * r:
        return True
    # the tail: a triangle below the box
    return bottom <= y <= 0.76 and 0.32 <= x <= 0.32 + (0.76 - y) * 1.2 and x <= 0.46


def dot(x: float, y: float) -> bool:
    return any((x - cx) ** 2 + (y - 0.46) ** 2 <= 0.035 ** 2 for cx in (0.38, 0.5, 0.62))


def pixel(x: float, y: float) -> tuple[int, int, int]:
    if inside_bubble(x, y) and not dot(x, y):
        return WHITE
    return BLUE


def draw(size: int, samples: int = 4) -> bytes:
    rows = []
    for py in range(size):
        row = bytearray([0])
        for px in range(size):
            acc = [0, 0, 0]
            for sy in range(samples):
                for sx in range(samples):
                    c = pixel((px + (sx + 0.5) / samples) / size, (py + (sy + 0.5) / samples) / size)
                    acc = [a + b for a, b in zip(acc, c, strict=True)]
            row += bytes(a // (samples * samples) for a in acc)
        rows.append(bytes(row))
    return png(size, b"".join(rows))


def png(size: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) \
        + chunk(b"IEND", b"")


if __name__ == "__main__":
    for n in (192, 512):
        (STATIC / f"icon-{n}.png").write_bytes(draw(n))
        print(f"wrote {STATIC / f'icon-{n}.png'}")
