"""Safe decoding of user uploads into 8-bit RGB and into the model's input size.

An upload is judged by its bytes, never by its name: Pillow is told to try only PNG,
JPEG, WebP, GIF and BMP, so an SVG, PDF or script renamed to ``cat.png`` is refused
before any decoder sees it. Limits are checked in order of cost:

1. the byte size, before anything is parsed;
2. the pixel count from the header, before the pixels are decoded (a 50 kB PNG can
   claim 20000x20000 pixels and cost gigabytes to decode: a "decompression bomb");
3. a full decode inside ``try``, so a truncated or corrupt file fails here and not
   later in the app.

Nothing global is changed: ``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES``
are shared by every user of the process (Streamlit serves all sessions from one
process), so the pixel limit is applied locally to each upload instead.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from io import BytesIO

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["ImageError", "MAX_UPLOAD_BYTES", "MAX_PIXELS", "FORMATS", "open_upload", "to_input_tensor",
           "header_pixels", "check_upload_batch"]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # decompression-bomb limit for uploads (about 7000x5700)
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_FORMATS_TEXT = "a PNG, JPEG, WebP, GIF or BMP image"
_WHITE = (255, 255, 255)
# Modes that hold more than 8 bits per sample; Pillow's own convert("L") clips them at
# 255 instead of scaling, which turns every 16-bit image into a white sheet.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageError(ValueError):
    """An upload cannot be used as an image; the message says what is wrong and what to do."""


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels"


def _too_large(detail: str, max_pixels: int) -> ImageError:
    return ImageError(
        f"the image is too large ({detail}); the limit is {_megapixels(max_pixels)}. "
        "Scale it down (a few hundred pixels a side is plenty for a 32x32 model) and upload it again."
    )


def open_upload(
    data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decode uploaded bytes into an upright 8-bit RGB image, or raise ``ImageError``.

    Animated GIF/WebP give their first frame; transparency is composited on white;
    CMYK, palette, grayscale and 16-bit images are converted to 8-bit RGB.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected the uploaded file's bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise ImageError("the file is empty; upload it again or pick another image")
    if size > max_bytes:
        raise ImageError(
            f"the file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.1f} MB. "
            "Upload a smaller or more compressed image."
        )

    try:
        with warnings.catch_warnings(record=True) as caught:
            # Pillow warns (or, past twice its global limit, raises) about bombs while
            # reading the header. Recording keeps the warning from reaching the log and
            # lets us turn it into an ImageError below without touching the global limit.
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(BytesIO(bytes(data)), formats=list(FORMATS))
    except Image.DecompressionBombError as e:
        # Raised before we can see img.size; Pillow's message carries the pixel count.
        m = _PIL_PIXELS.search(str(e))
        raise _too_large(_megapixels(int(m.group(1))) if m else "its header claims too many pixels", max_pixels) from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"the file is not {_FORMATS_TEXT}; convert it to PNG or JPEG and upload it again") from e
    except Exception as e:  # a hostile header can make a plugin raise almost anything
        raise ImageError(f"the file could not be read as {_FORMATS_TEXT} ({e}); it may be damaged") from e

    w, h = img.size
    bomb = any(issubclass(c.category, Image.DecompressionBombWarning) for c in caught)
    if w * h > max_pixels or bomb:
        img.close()
        raise _too_large(f"{w}x{h} = {_megapixels(w * h)}", max_pixels)

    try:
        img.seek(0)  # animated GIF/WebP: the first frame
        img.load()  # force the full decode now: truncated data fails here, not later
        return _to_rgb8(_upright(img))
    except ImageError:
        raise
    except Exception as e:  # truncated data is OSError; corrupt data can raise other types
        raise ImageError(
            f"the {img.format or 'image'} file is truncated or damaged ({e}); save it again and re-upload"
        ) from e


def header_pixels(data: bytes) -> int:
    """The pixel count ``data``'s image header claims, read without decoding the pixels;
    0 for bytes that are not an accepted image (``open_upload`` refuses those one by one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(bytes(data)), formats=list(FORMATS)) as img:
                w, h = img.size
                return w * h
    except Image.DecompressionBombError as e:  # past twice Pillow's own limit: the count is in the message
        m = _PIL_PIXELS.search(str(e))
        return int(m.group(1)) if m else MAX_PIXELS + 1
    except Exception:  # noqa: BLE001 - not an image, or a hostile header: refused later, per file
        return 0


def check_upload_batch(files: Sequence[tuple[str, bytes]], *, max_files: int, max_pixels: int) -> None:
    """Refuse one request's uploads (``(name, bytes)`` pairs) beyond ``max_files`` images or
    ``max_pixels`` pixels together, before any is decoded: twenty 40-megapixel photos pass
    the per-file limits one by one and still take gigabytes at once. Raises ``ImageError``.
    An image over the per-image limit (``MAX_PIXELS``) does not count: ``open_upload`` refuses
    it alone, and the good images beside it are still shown."""
    if len(files) > max_files:
        raise ImageError(
            f"{len(files)} images were uploaded at once; this server takes up to {max_files}. "
            "Remove some and upload the rest afterwards."
        )
    total = 0
    for _, data in files:
        pixels = header_pixels(data)
        total += pixels if pixels <= MAX_PIXELS else 0
        if total > max_pixels:
            raise ImageError(
                f"the {len(files)} images have more than {_megapixels(max_pixels)} together, "
                f"this server's limit for one upload; scale them down (a few hundred pixels a side is "
                "plenty for a 32x32 model) or upload fewer at once."
            )


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones store portrait photos sideways plus a tag)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # A malformed EXIF block should not reject an otherwise good picture; the cost
        # is only that a rotated photo may show sideways.
        return img


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Any decoded mode -> 8-bit RGB; transparent pixels become white."""
    if img.mode in _WIDE_MODES:
        img = _wide_to_l(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or img.has_transparency_data:
        # Palette/grayscale transparency (PNG tRNS, GIF) becomes a real alpha channel here.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _WHITE + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _wide_to_l(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grayscale -> 8-bit L by scaling, not clipping."""
    a = np.asarray(img).astype(np.float64)  # (H, W)
    # "I" has no fixed range; PNG and the other accepted formats only produce it from
    # 16-bit sources, so clip to the 16-bit range and scale like the others.
    a = np.clip(a, 0, 65535) / 257.0  # 65535 / 257 = 255 exactly
    return Image.fromarray(np.rint(a).astype(np.uint8), mode="L")


def to_input_tensor(img: Image.Image, size: int = 32) -> torch.Tensor:
    """(3, size, size) uint8: the largest centred square, resized with LANCZOS.

    Centre-crop rather than squash: the model was trained on square images of undistorted
    objects, and most photos put their subject near the middle. LANCZOS rather than
    nearest/bilinear: shrinking a photo 10-100x to 32 pixels with a point sampler keeps
    a few arbitrary pixels (aliasing); Pillow widens the LANCZOS kernel by the scale
    factor, so every output pixel averages its whole footprint, like area resampling.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ImageError(f"the target size must be a positive integer, got {size!r}")
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h}); upload another image")
    if img.mode != "RGB":
        img = _to_rgb8(img)
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    arr = np.asarray(img, dtype=np.uint8)  # (size, size, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, size, size)
