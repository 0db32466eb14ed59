"""A minimal RGB raster: lines, square markers, rectangles, 3x5 bitmap text, and PNG encoding.

Just enough to draw a line chart without a plotting library (numpy + zlib + struct). Pixel coordinates are
``(x, y)`` floats with ``(0, 0)`` the top-left pixel's centre, x to the right and y down; a colour is an
``(r, g, b)`` tuple of ints in [0, 255].
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 3 x 5 glyphs, rows top to bottom, "#" = ink. Lower-case letters are drawn as upper-case.
_GLYPHS = {
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###", "3": "### ..# ### ..# ###",
    "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###", "6": "### #.. ### #.# ###", "7": "### ..# ..# ..# ..#",
    "8": "### #.# ### #.# ###", "9": "### #.# ### ..# ###", "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.",
    "C": "### #.. #.. #.. ###", "D": "##. #.# #.# #.# ##.", "E": "### #.. ##. #.. ###", "F": "### #.. ##. #.. #..",
    "G": "### #.. #.# #.# ###", "H": "#.# #.# ### #.# #.#", "I": "### .#. .#. .#. ###", "J": "..# ..# ..# #.# ###",
    "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###", "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#",
    "O": ".#. #.# #.# #.# .#.", "P": "### #.# ### #.. #..", "Q": ".#. #.# #.# ### ..#", "R": "##. #.# ##. #.# #.#",
    "S": ".## #.. .#. ..# ##.", "T": "### .#. .#. .#. .#.", "U": "#.# #.# #.# #.# ###", "V": "#.# #.# #.# #.# .#.",
    "W": "#.# #.# ### ### #.#", "X": "#.# #.# .#. #.# #.#", "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###",
    ".": "... ... ... ... .#.", "-": "... ... ### ... ...", "_": "... ... ... ... ###", ":": "... .#. ... .#. ...",
    "/": "..# ..# .#. #.. #..", "@": "### #.# #.# #.. ###", " ": "... ... ... ... ...",
}
GLYPH_WIDTH, GLYPH_HEIGHT = 3, 5


def glyph(char: str) -> np.ndarray:
    """bool[5, 3] ink mask of ``char`` (upper-cased); a character without a glyph is blank."""
    rows = _GLYPHS.get(char.upper(), _GLYPHS[" "]).split()
    return np.array([[c == "#" for c in row] for row in rows], bool)


class Canvas:
    """``pixels``: uint8[height, width, 3], filled with ``background``."""

    def __init__(self, width: int, height: int, background=(255, 255, 255)):
        if width < 1 or height < 1:
            raise ValueError(f"canvas size must be positive, got {width} x {height}")
        self.pixels = np.empty((height, width, 3), np.uint8)
        self.pixels[:] = background

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def rect(self, x0: float, y0: float, x1: float, y1: float, color) -> None:
        """Fills the pixels with centres in ``[x0, x1] x [y0, y1]`` (clipped to the canvas)."""
        left, right = max(int(np.ceil(min(x0, x1))), 0), min(int(np.floor(max(x0, x1))), self.width - 1)
        top, bottom = max(int(np.ceil(min(y0, y1))), 0), min(int(np.floor(max(y0, y1))), self.height - 1)
        if left <= right and top <= bottom:
            self.pixels[top:bottom + 1, left:right + 1] = color

    def marker(self, x: float, y: float, color, size: int = 7) -> None:
        """A filled ``size`` x ``size`` square centred on the pixel nearest ``(x, y)``."""
        cx, cy, half = int(round(x)), int(round(y)), size // 2
        self.rect(cx - half, cy - half, cx - half + size - 1, cy - half + size - 1, color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color, width: int = 1) -> None:
        """A segment ``width`` pixels thick: every pixel nearest to one of its samples, one sample per pixel
        step along the longer axis, stamped with a ``width`` x ``width`` square."""
        steps = int(np.ceil(max(abs(x1 - x0), abs(y1 - y0)))) + 1
        xs = np.rint(np.linspace(x0, x1, steps)).astype(int)
        ys = np.rint(np.linspace(y0, y1, steps)).astype(int)
        lo = (width - 1) // 2
        for dx in range(-lo, width - lo):
            for dy in range(-lo, width - lo):
                px, py = xs + dx, ys + dy
                inside = (px >= 0) & (px < self.width) & (py >= 0) & (py < self.height)
                self.pixels[py[inside], px[inside]] = color

    def polyline(self, points, color, width: int = 1) -> None:
        """Segments between consecutive ``(x, y)`` points."""
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
            self.line(x0, y0, x1, y1, color, width)

    def text(self, x: int, y: int, text: str, color, scale: int = 2) -> int:
        """Draws ``text`` with its top-left corner at pixel ``(x, y)``, each glyph pixel ``scale`` x ``scale``,
        one blank column between glyphs; returns the x just after the last glyph."""
        for char in text:
            ink = np.kron(glyph(char), np.ones((scale, scale), bool))
            h, w = ink.shape
            region = self.pixels[y:y + h, x:x + w]
            region[ink[:region.shape[0], :region.shape[1]]] = color
            x += (GLYPH_WIDTH + 1) * scale
        return x


def text_width(text: str, scale: int = 2) -> int:
    """Pixels ``Canvas.text`` advances for ``text``."""
    return len(text) * (GLYPH_WIDTH + 1) * scale


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8[H, W, 3] RGB pixels: 8-bit truecolour, no interlace, filter type 0 on every row."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be uint8[H, W, 3], got {pixels.dtype}{list(pixels.shape)}")
    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * 3)], axis=1)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _chunk(b"IEND", b""))
