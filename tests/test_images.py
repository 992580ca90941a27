"""Upload decoding: every case is built in memory with Pillow (no fixtures on disk)."""

from __future__ import annotations

import random
import struct
import warnings
import zlib
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from resnet_viz.data.uploads import ImageError, open_upload, to_input_tensor


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def close(px: tuple[int, ...], want: tuple[int, ...], tol: int = 3) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px, want, strict=True))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_each_allowed_format_decodes_to_rgb(fmt: str) -> None:
    data = encode(solid((200, 40, 40), (10, 7)), fmt)
    img = open_upload(data)
    assert img.mode == "RGB" and img.size == (10, 7)
    assert close(img.getpixel((5, 3)), (200, 40, 40), tol=12)  # lossy formats shift colours a little


def test_animated_gif_gives_first_frame() -> None:
    frames = [solid((255, 0, 0), (6, 6)), solid((0, 0, 255), (6, 6))]
    buf = BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(BytesIO(buf.getvalue())).n_frames == 2
    img = open_upload(buf.getvalue())
    assert close(img.getpixel((3, 3)), (255, 0, 0))


def test_animated_webp_gives_first_frame() -> None:
    frames = [solid((0, 255, 0), (6, 6)), solid((0, 0, 255), (6, 6))]
    buf = BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    img = open_upload(buf.getvalue())
    assert close(img.getpixel((3, 3)), (0, 255, 0))


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", quality=95)  # no ink = white
    assert Image.open(BytesIO(data)).mode == "CMYK"
    img = open_upload(data)
    assert img.mode == "RGB" and close(img.getpixel((4, 4)), (255, 255, 255), tol=6)


def test_rgba_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    img = open_upload(encode(rgba, "PNG"))
    assert img.getpixel((3, 3)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (255, 0, 0)


def test_half_transparent_la_is_blended_on_white() -> None:
    img = open_upload(encode(Image.new("LA", (3, 3), (0, 128)), "PNG"))
    assert close(img.getpixel((1, 1)), (127, 127, 127), tol=2)


def test_palette_png_with_transparency() -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 green
    p.putpixel((1, 1), 1)
    data = encode(p, "PNG", transparency=0)
    assert Image.open(BytesIO(data)).mode == "P"
    img = open_upload(data)
    assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent black -> white
    assert img.getpixel((1, 1)) == (0, 200, 0)


def test_palette_png_without_transparency() -> None:
    p = solid((10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert open_upload(encode(p, "PNG")).getpixel((0, 0)) == (10, 20, 30)


def test_16bit_grayscale_is_scaled_not_clipped() -> None:
    a = np.array([[65535, 32896], [257, 0]], dtype=np.uint16)  # 255, 128, 1, 0 after /257
    data = encode(Image.fromarray(a), "PNG")
    assert Image.open(BytesIO(data)).mode.startswith("I")
    img = open_upload(data)
    assert [img.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [255, 128, 1, 0]
    assert img.getpixel((1, 0)) == (128, 128, 128)  # Pillow's own convert would give 255


@pytest.mark.parametrize("mode,value,want", [("L", 77, 77), ("1", 1, 255)])
def test_grayscale_becomes_rgb(mode: str, value: int, want: int) -> None:
    img = open_upload(encode(Image.new(mode, (5, 5), value), "PNG"))
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (want, want, want)


def test_exif_orientation_is_applied() -> None:
    src = solid((0, 0, 0), (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img = open_upload(encode(src, "JPEG", exif=exif.tobytes()))
    assert img.size == (20, 40)


def test_one_pixel_image_is_accepted_and_resized() -> None:
    img = open_upload(encode(solid((9, 99, 199), (1, 1)), "PNG"))
    t = to_input_tensor(img)
    assert t.shape == (3, 32, 32) and t[:, 0, 0].tolist() == [9, 99, 199]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny (wrong) IDAT: only the header matters."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [7000, 10000, 20000])  # ours only, Pillow warns, Pillow raises
def test_decompression_bomb_is_refused_without_global_changes(side: int) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    with pytest.raises(ImageError, match="too large") as info:
        open_upload(_png_header_only(side, side))
    pixels = side * side
    assert f"{pixels / 1e6:.1f} megapixels" in str(info.value)  # the size is named
    if side < 20000:  # Pillow lets us see the header: the message gives width x height
        assert f"{side}x{side}" in str(info.value)
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters_before


def test_local_pixel_limit() -> None:
    data = encode(solid((1, 2, 3), (100, 50)), "PNG")
    with pytest.raises(ImageError, match="100x50"):
        open_upload(data, max_pixels=4999)
    assert open_upload(data, max_pixels=5000).size == (100, 50)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))  # incompressible
    data = encode(noisy, fmt)
    with pytest.raises(ImageError, match="truncated or damaged"):
        open_upload(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@pytest.mark.parametrize(
    "data",
    [
        SVG,
        b"just some text, named cat.png",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        random.Random(0).randbytes(4096),
        b"GIF89a",  # a format's magic alone is not an image
    ],
    ids=["svg", "text", "pdf", "random", "magic-only"],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a PNG, JPEG, WebP, GIF or BMP image"):
        open_upload(data)


def test_other_real_formats_are_refused_by_content() -> None:
    # TIFF and ICO are images Pillow can read, but not on our list: refused whatever the name.
    for fmt in ["TIFF", "ICO"]:
        with pytest.raises(ImageError, match="not a PNG, JPEG, WebP, GIF or BMP image"):
            open_upload(encode(solid((1, 2, 3), (16, 16)), fmt))


def test_empty_and_oversize_payloads() -> None:
    with pytest.raises(ImageError, match="the file is empty"):
        open_upload(b"")
    data = encode(solid((1, 2, 3)), "PNG")
    with pytest.raises(ImageError, match="limit"):
        open_upload(data, max_bytes=len(data) - 1)
    assert open_upload(data, max_bytes=len(data)).size == (8, 6)


def test_oversize_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="MB"):
        open_upload(b"\0" * 2048, max_bytes=1024)  # garbage, but size is checked first


def test_to_input_tensor_shape_and_dtype() -> None:
    t = to_input_tensor(solid((5, 6, 7), (50, 30)), size=16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.uint8
    assert t[:, 8, 8].tolist() == [5, 6, 7]


def test_to_input_tensor_centre_crops() -> None:
    # 96x32: red | green | blue thirds. The centre square is all green; squashing would keep all three.
    img = Image.new("RGB", (96, 32), (255, 0, 0))
    img.paste((0, 255, 0), (32, 0, 64, 32))
    img.paste((0, 0, 255), (64, 0, 96, 32))
    t = to_input_tensor(img)
    assert (t[1] == 255).all() and (t[0] == 0).all() and (t[2] == 0).all()
    tall = to_input_tensor(img.transpose(Image.Transpose.ROTATE_90))
    assert (tall[1] == 255).all()


def test_to_input_tensor_averages_when_shrinking() -> None:
    # A fine checkerboard: an area-like filter gives mid-grey, a point sampler gives 0 or 255.
    board = (np.indices((320, 320)).sum(0) % 2 * 255).astype(np.uint8)
    t = to_input_tensor(Image.fromarray(board).convert("RGB"))
    assert (t.float() - 127.5).abs().max() < 10


def test_to_input_tensor_rejects_bad_size() -> None:
    with pytest.raises(ImageError, match="positive integer"):
        to_input_tensor(solid((0, 0, 0)), size=0)
