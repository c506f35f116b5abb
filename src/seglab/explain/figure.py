"""What a figure of the explain page is, and how its pictures are encoded.

A figure is one picture (a PNG, or an animated GIF for the figures that move) and a
caption. Pictures are drawn with matplotlib's object API (`matplotlib.figure.Figure`,
no pyplot and no global state), so drawing is thread-free and needs no display.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Rectangle
from PIL import Image

from seglab.explain.study_text import Correction

DPI = 100
GIF_FRAME_MS = 450


@dataclass(frozen=True)
class Picture:
    """Encoded picture bytes and their MIME type (`image/png` or `image/gif`)."""

    data: bytes
    mime: str

    @property
    def extension(self) -> str:
        return self.mime.split("/")[1]


@dataclass(frozen=True)
class Figure:
    """A drawn figure: its picture, a caption of a few sentences (plain text), and the
    corrections of the study text's passages it illustrates (`study_text.Correction`)."""

    caption: str
    picture: Picture
    corrections: tuple[Correction, ...] = ()


def new_figure(width_in: float, height_in: float) -> MplFigure:
    """A white matplotlib figure of the given size in inches (DPI pixels each)."""
    return MplFigure(figsize=(width_in, height_in), dpi=DPI, facecolor="white")


def png(figure: MplFigure) -> Picture:
    """Encode a matplotlib figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return Picture(buffer.getvalue(), "image/png")


def gif(frames: list[MplFigure], *, frame_ms: int = GIF_FRAME_MS, last_ms: int = 2000) -> Picture:
    """Encode matplotlib figures as the frames of a looping animated GIF (Pillow).

    The last frame stays `last_ms` so that the finished result can be read.
    """
    images = [_rgb(frame) for frame in frames]
    # One shared palette, so that colours do not flicker from frame to frame.
    palette_source = images[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    quantised = [
        image.quantize(palette=palette_source, dither=Image.Dither.NONE) for image in images
    ]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    buffer = io.BytesIO()
    quantised[0].save(
        buffer, format="GIF", save_all=True, append_images=quantised[1:], duration=durations,
        loop=0, optimize=False,
    )  # fmt: skip
    return Picture(buffer.getvalue(), "image/gif")


def _rgb(figure: MplFigure) -> Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def show_image(axes: Axes, image: np.ndarray, title: str | None = None) -> None:
    """Draw an (H, W, 3) uint8 or float image with pixel edges on integer coordinates.

    `extent` puts pixel (i, j) on the square [j, j + 1] x [i, i + 1], the frame boxes are
    given in (xyxy, no +1), so boxes can be drawn in pixel coordinates as they are.
    """
    height, width = image.shape[:2]
    axes.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=9)


def draw_box(axes: Axes, box, colour, *, width=1.5, style="-", alpha=1.0, label=None):
    """Outline an xyxy box (in the axes' data coordinates)."""
    x0, y0, x1, y1 = (float(value) for value in box)
    axes.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width,
                  linestyle=style, alpha=alpha, label=label)
    )  # fmt: skip


def to_uint8_image(image) -> np.ndarray:
    """A float (C, H, W) tensor in [0, 1] (1 or 3 channels) -> (H, W, 3) uint8 array."""
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    array = pixels.permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
