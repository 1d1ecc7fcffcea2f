"""Small PIL drawing helpers shared by the built-in environments.

Everything here is deterministic: the same arguments always give the same pixels, so an episode's
frames depend only on its seed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

#: The colour words of the built-in tasks and the RGB they are drawn with. Chosen far apart so a
#: 32-pixel image still separates them; the names are single tokens of the tiny vocabulary.
PALETTE: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star")


def color_rgb(name: str) -> RGB:
    """The RGB of a palette colour, with an error listing the known names."""
    try:
        return PALETTE[name]
    except KeyError:
        raise ValueError(f"unknown color {name!r}; known colors: {', '.join(PALETTE)}") from None


def check_names(kind: str, names: list[str] | tuple[str, ...], known: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the unknown entries of a colour or shape list."""
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"{kind} must be a non-empty list from {list(known)}; got {list(names)}")


def canvas(size: int | tuple[int, int], background: RGB) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A new RGB image and a drawing context on it."""
    wh = (size, size) if isinstance(size, int) else size
    image = Image.new("RGB", wh, background)
    return image, ImageDraw.Draw(image)


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, fill: RGB
) -> None:
    """Draw a filled shape of the given name centred at ``(cx, cy)``."""
    r = radius
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85  # a square of the same radius looks larger than the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=fill
        )
    elif shape == "star":
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPE_NAMES)}")


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the bitmap default when FreeType is missing)."""
    try:
        return ImageFont.load_default(size=max(size, 6))
    except (ImportError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def draw_centered_text(
    draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float, size: int, fill: RGB
) -> None:
    """Draw ``text`` centred at ``(cx, cy)``."""
    draw.text((cx, cy), text, fill=fill, font=font(size), anchor="mm")


def to_array(
    image: Image.Image, noise: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The image as ``uint8 (H, W, 3)``, with optional Gaussian pixel noise of std ``noise``.

    Without noise the array is read-only (it shares the ``bytes`` Pillow hands out).
    """
    # convert() copies even an RGB image; the built-in environments all draw RGB.
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    frame = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    return add_noise(frame, noise, rng)


def add_noise(frame: np.ndarray, noise: float, rng: np.random.Generator | None) -> np.ndarray:
    """``frame`` plus Gaussian pixel noise of std ``noise``, clipped to uint8 (``frame`` itself
    when ``noise`` is 0; a new array otherwise, ``frame`` is never written)."""
    if noise <= 0:
        return frame
    if rng is None:
        raise ValueError("pixel noise needs the environment's random generator")
    jitter = rng.normal(0.0, noise, size=frame.shape)
    return np.ascontiguousarray(np.clip(frame.astype(np.float64) + jitter, 0, 255).astype(np.uint8))


def resize_frame(frame: np.ndarray, size: int | None, nearest: bool = False) -> np.ndarray:
    """``frame`` resized to ``size`` x ``size`` (unchanged when ``size`` is None or already so)."""
    if size is None or frame.shape[:2] == (size, size):
        return frame
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(frame).resize((size, size), resample), dtype=np.uint8)
