"""What every page shares: the HTML shell and style, figures, images inline.

The pages open in a browser with no server: plots and thumbnails are data
URIs, and each plot is also kept as a PNG beside the page.
"""

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from tftransfer.data.decode import DECODABLE_FORMATS

#: The largest side of a thumbnail, in pixels.
THUMBNAIL = 128

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: right; }
th:first-child { text-align: left; } tr.avg { background: #f3f3f3; }
td.note { color: #a33; text-align: left; font-size: 0.9em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 140px; font-size: 0.75em; }
figure img { max-width: 128px; max-height: 128px; display: block; }
.missing { width: 128px; height: 96px; background: #eee; }
.warning { background: #fff3cd; border-left: 4px solid #d39e00; padding: 6px 10px; }
.grid > img { max-width: 360px; }
.summary { font-size: 1.1em; }
"""


def write_html(path: Union[str, Path], title: str, sections: Iterable[str],
               extra_style: str = "") -> Path:
    """Writes a self-contained page: `sections` (HTML) under `title`, in the pages' style.

    Args:
        path: The `.html` file.
        title: The page's title (escaped here).
        sections: The body's HTML, in order.
        extra_style: CSS added after `STYLE`.

    Returns:
        `path`, as a `Path`.
    """
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{STYLE}{extra_style}</style></head>"
            "<body>" + "\n".join(sections) + "</body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def figure(width, height, columns=1):
    """A figure off pyplot: no backend is chosen, so notebooks keep theirs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, columns)


def save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def data_uri(path):
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def thumbnail_uri(image=None, file=None):
    """A JPEG data URI of an image array or file, at most THUMBNAIL px, or `None`."""
    from PIL import Image

    try:
        if image is None:
            picture = Image.open(file, formats=DECODABLE_FORMATS)
            # A JPEG decodes straight at a fraction of its size; a photo the
            # pixel check let through still fits (PIL's own limit is lower).
            picture.draft("RGB", (THUMBNAIL, THUMBNAIL))
            picture.load()
        else:
            picture = Image.fromarray(np.asarray(image, np.uint8))
    except (OSError, ValueError, TypeError, Image.DecompressionBombError):
        return None
    picture = picture.convert("RGB")
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
