#!/usr/bin/env python3
"""Draws EchoWarp's icons with nothing but the standard library: a disc in a state's colour with
white sound waves leaving a source. Run it again after a change:
    python3 icons/make_icons.py
Writes
  - the tray icons, one 64x64 RGBA PNG per state (idle, connecting, streaming, error), and each
    again muted (`<state>-muted.png`: the source with a cross where the waves were);
  - the application icon (the streaming colour) as PNGs for the freedesktop icon theme
    (echowarp-48.png, echowarp-128.png, echowarp-256.png), echowarp.ico for the Windows installer
    (16, 32, 48, 256; PNG entries) and echowarp.icns for the macOS bundle (16 to 512).
"""
import math, os, struct, zlib

SS = 4  # supersampling per axis
STATES = {
    "idle": (120, 128, 140),
    "connecting": (230, 160, 20),
    "streaming": (30, 170, 90),
    "error": (210, 50, 50),
}
APP_COLOUR = STATES["streaming"]


def coverage(x, y, shape, scale):
    """Fraction of the pixel (x, y) inside `shape` (drawn on a 64-unit grid), by supersampling."""
    inside = 0
    for i in range(SS):
        for j in range(SS):
            if shape((x + (i + 0.5) / SS) * scale, (y + (j + 0.5) / SS) * scale):
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


def crossed(px, py):
    # The source's dot, and a cross where the waves would be: nothing leaves it.
    if math.hypot(px - 20, py - 32) <= 5:
        return True
    u, v = px - 39, py - 32
    return max(abs(u), abs(v)) <= 11 and min(abs(u - v), abs(u + v)) <= 3 * math.sqrt(2)


def draw(size, colour, mark=waves):
    scale = 64 / size
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            a = coverage(x, y, disc, scale)
            w = coverage(x, y, lambda px, py: disc(px, py) and mark(px, py), scale)
            # White waves over the coloured disc.
            f = w / max(a, 1e-9)
            row += [round(c * (1 - f) + 255 * f) if a else 0 for c in colour] + [round(255 * a)]
        rows.append(row)
    return rows


def png_bytes(size, rows):
    raw = b"".join(b"\x00" + bytes(row) for row in rows)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def ico(images):
    """ICONDIR, one ICONDIRENTRY per image, then the PNGs (a width of 0 means 256)."""
    head = struct.pack("<HHH", 0, 1, len(images))
    offset = len(head) + 16 * len(images)
    entries, data = b"", b""
    for size, blob in images:
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(blob), offset + len(data))
        data += blob
    return head + entries + data


def icns(images):
    """'icns', total length, then (OSType, length, PNG) per image, big-endian."""
    kinds = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09"}
    body = b"".join(kinds[s] + struct.pack(">I", 8 + len(b)) + b for s, b in images)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


here = os.path.dirname(os.path.abspath(__file__))


def write(name, data):
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
    print("wrote", f"icons/{name}")


for name, colour in STATES.items():
    write(f"{name}.png", png_bytes(64, draw(64, colour)))
    write(f"{name}-muted.png", png_bytes(64, draw(64, colour, crossed)))
app = {s: png_bytes(s, draw(s, APP_COLOUR)) for s in (16, 32, 48, 128, 256, 512)}
for s in (48, 128, 256):
    write(f"echowarp-{s}.png", app[s])
write("echowarp.ico", ico([(s, app[s]) for s in (16, 32, 48, 256)]))
write("echowarp.icns", icns([(s, app[s]) for s in (16, 32, 128, 256, 512)]))
