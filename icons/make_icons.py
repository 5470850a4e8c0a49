#!/usr/bin/env python3
"""Draws EchoWarp's tray icons (one per state) as 64x64 RGBA PNGs with nothing but the standard
library: a disc in the state's colour with white sound waves. Run it again after a change:
    python3 icons/make_icons.py
"""
import math, os, struct, zlib

SIZE, SS = 64, 4  # pixels, supersampling per axis
STATES = {
    "idle": (120, 128, 140),
    "connecting": (230, 160, 20),
    "streaming": (30, 170, 90),
    "error": (210, 50, 50),
}


def coverage(x, y, shape):
    """Fraction of the pixel (x, y) inside `shape`, by supersampling."""
    inside = 0
    for i in range(SS):
        for j in range(SS):
            if shape(x + (i + 0.5) / SS, y + (j + 0.5) / SS):
                inside += 1
    return inside / (SS * SS)


def disc(px, py):
    return math.hypot(px - 32, py - 32) <= 30


def waves(px, py):
    # A dot and two arcs opening to the right, like sound leaving a source.
    d = math.hypot(px - 20, py - 32)
    angle = abs(math.atan2(py - 32, px - 20))
    if d <= 5:
        return True
    if angle > math.radians(50):
        return False
    return any(abs(d - r) <= 3 for r in (14, 24))


def png(path, rgba_rows):
    raw = b"".join(b"\x00" + bytes(row) for row in rgba_rows)
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


here = os.path.dirname(os.path.abspath(__file__))
for name, (r, g, b) in STATES.items():
    rows = []
    for y in range(SIZE):
        row = []
        for x in range(SIZE):
            a = coverage(x, y, disc)
            w = coverage(x, y, lambda px, py: disc(px, py) and waves(px, py))
            # White waves over the coloured disc.
            cr, cg, cb = (round(c * (1 - w / max(a, 1e-9)) + 255 * (w / max(a, 1e-9))) if a else 0 for c in (r, g, b))
            row += [cr, cg, cb, round(255 * a)]
        rows.append(row)
    png(os.path.join(here, f"{name}.png"), rows)
    print("wrote", f"icons/{name}.png")
