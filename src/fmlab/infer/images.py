"""Turn image files, `.npy` arrays and IDX files into Fashion-MNIST-style 28x28 uint8 images.

Photos (PNG, JPEG, BMP, GIF, WebP; any size or colour mode) go through the steps Zalando used
to make Fashion-MNIST (Xiao et al., 2017), in the order that fits a finished photo:

1. decode the first frame, apply the EXIF orientation, flatten transparency onto the
   background colour (black, or white with `invert`), convert to 8-bit grayscale
   (16-bit and float images are rescaled, not clipped);
2. with `invert`, negate the intensities: Fashion-MNIST items are light on a dark
   background, so dark-on-light product photos must be inverted;
3. trim the edges whose pixels are within 5% of the corner colour, leaving the object's
   bounding box (an image with nothing but background is kept whole);
4. resize so that the longest side is 28 pixels, keeping the aspect ratio (Lanczos);
5. centre the result on a 28x28 black canvas.

`.npy` files hold one image (28, 28) or a stack (N, 28, 28): uint8, or floats in [0, 1] or
[0, 255]; they and IDX files are taken as already prepared (no trimming or inversion unless
`invert`). Every problem raises `ImageError` with a message that names the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from fmlab.errors import FmlabError
from fmlab.io import limit_bytes, read_limited

SIZE = 28
MAX_PIXELS = 50_000_000  # decompression-bomb guard: larger images are refused before decoding
MAX_BYTES = 64 << 20  # largest decompressed IDX content accepted
LIMIT_VARIABLE = "FMLAB_MAX_INPUT_MB"  # raises the 64 MiB limit on the bytes of an input file
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # never EPS & co, whose plugins run external programs
TRIM_TOLERANCE = 0.05 * 255
NPY_MAGIC = b"\x93NUMPY"
GZIP_MAGIC = b"\x1f\x8b"


class ImageError(FmlabError):
    """An input image or array file is unreadable, empty, too large or of the wrong shape."""


def load(path: str | Path, invert: bool = False) -> np.ndarray:
    """Read one file into uint8 images of shape (N, 28, 28), light object on dark background. Only regular
    files of at most 64 MiB ($FMLAB_MAX_INPUT_MB) are read."""
    path = Path(path)
    try:
        content = read_limited(path, limit_bytes(LIMIT_VARIABLE, 64), "input files", LIMIT_VARIABLE)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    return decode(content, str(path), invert)


def decode(content: bytes, name: str = "<bytes>", invert: bool = False) -> np.ndarray:
    """Like `load`, for the bytes of a file; the format is sniffed from the content, not the name."""
    if not content:
        raise ImageError(f"{name}: empty file")
    if content.startswith(GZIP_MAGIC):
        return _from_idx(_gunzip(content, name), name, invert)
    if content.startswith(NPY_MAGIC):
        return _from_array(_read_npy(content, name), name, invert)
    if len(content) >= 4 and content[:2] == b"\x00\x00":
        return _from_idx(content, name, invert)
    return prepare(_read_picture(content, name, background=255 if invert else 0), invert)[None]


def prepare(gray: np.ndarray, invert: bool = False) -> np.ndarray:
    """A 2-D uint8 grayscale picture -> (28, 28) uint8: invert, trim, resize longest side, centre."""
    from PIL import Image

    if invert:
        gray = 255 - gray
    gray = _trim(gray)
    h, w = gray.shape
    scale = SIZE / max(h, w)
    new_w, new_h = max(1, min(SIZE, round(w * scale))), max(1, min(SIZE, round(h * scale)))
    small = np.asarray(Image.fromarray(gray).resize((new_w, new_h), Image.Resampling.LANCZOS))
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    top, left = (SIZE - new_h + 1) // 2, (SIZE - new_w + 1) // 2  # odd margins: the extra pixel goes top/left
    canvas[top : top + new_h, left : left + new_w] = small
    return canvas


def _trim(gray: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the pixels that differ from the corner colour by more than 5%."""
    corners = np.array([gray[0, 0], gray[0, -1], gray[-1, 0], gray[-1, -1]], dtype=np.int16)
    object_mask = np.abs(gray.astype(np.int16) - int(np.median(corners))) > TRIM_TOLERANCE  # int16: big photos
    rows, cols = np.flatnonzero(object_mask.any(axis=1)), np.flatnonzero(object_mask.any(axis=0))
    if rows.size == 0:
        return gray
    return gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _read_picture(content: bytes, name: str, background: int = 0) -> np.ndarray:
    """Decode an image file to a 2-D uint8 grayscale array, refusing empty and oversized images."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(content), formats=FORMATS)
        except UnidentifiedImageError:
            if _fmt(content) == "image":
                raise ImageError(
                    f"{name}: not an image, .npy array or IDX file (expected PNG, JPEG, BMP, GIF or WebP)"
                ) from None
            size = _png_size(content)
            if size is not None and 0 in size:
                raise ImageError(f"{name}: image is {size[0]}x{size[1]} pixels; nothing to classify") from None
            raise ImageError(f"{name}: corrupt {_fmt(content)} header") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(_too_large(name, _png_size(content))) from None
        except Exception as exc:  # Pillow's header parsers raise many types on corrupt input
            raise ImageError(f"{name}: corrupt {_fmt(content)} header ({_why(exc)})") from None
        w, h = image.size
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: image is {w}x{h} pixels; nothing to classify")
        if w * h > MAX_PIXELS:
            raise ImageError(_too_large(name, (w, h)))
        try:
            image.seek(0)
            image = ImageOps.exif_transpose(image) or image
            return _grayscale(image, background)
        except Exception as exc:  # truncated or corrupt pixel data: OSError, SyntaxError, ValueError, ...
            raise ImageError(f"{name}: truncated or corrupt {image.format or 'image'} data ({_why(exc)})") from None


def _grayscale(image, background: int) -> np.ndarray:  # image: a PIL.Image.Image
    """Any Pillow mode -> uint8 gray; transparent pixels take the background colour."""
    from PIL import Image

    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        values = values / 257.0 if mode != "F" and values.max(initial=0) > 255 else values
        values = values * 255.0 if mode == "F" and values.max(initial=0) <= 1.0 else values
        return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _gunzip(content: bytes, name: str) -> bytes:
    """Decompress gzip'd content, refusing more than MAX_BYTES (a gzip bomb stops here)."""
    from fmlab.data import idx
    from fmlab.errors import DataError

    try:
        return idx.decompress(content, name, MAX_BYTES)
    except DataError as exc:
        raise ImageError(str(exc)) from None


def _read_npy(content: bytes, name: str) -> np.ndarray:
    """Read a .npy file without pickles, checking the header's shape against the data length."""
    from numpy.lib import format as npy

    stream = io.BytesIO(content)
    try:
        version = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = reader(stream, max_header_size=10_000)
    except Exception as exc:  # numpy raises ValueError, but bad headers reach ast/struct/unicode errors too
        raise ImageError(f"{name}: corrupt .npy header ({_why(exc)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ImageError(f"{name}: .npy dtype {dtype} is not numeric; save images as uint8 or float")
    if any(d < 0 for d in shape):
        raise ImageError(f"{name}: .npy header declares a negative dimension {shape}")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    data = content[stream.tell() :]
    if count * dtype.itemsize != len(data):
        raise ImageError(f"{name}: .npy header says {shape} {dtype} but the file holds {len(data)} data bytes")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _from_idx(content: bytes, name: str, invert: bool) -> np.ndarray:
    from fmlab.data import idx
    from fmlab.errors import DataError

    try:
        array = idx.parse(content, name)
    except DataError as exc:
        raise ImageError(str(exc)) from None
    return _from_array(array, name, invert)


def _from_array(array: np.ndarray, name: str, invert: bool) -> np.ndarray:
    """(28, 28) or (N, 28, 28) numeric array -> uint8 (N, 28, 28)."""
    shape = array.shape
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[1:] != (SIZE, SIZE) or array.shape[0] == 0:
        raise ImageError(f"{name}: array of shape {shape}; expected (28, 28) or (N, 28, 28) with N >= 1")
    if array.dtype == np.uint8:
        out = array.copy()
    elif array.dtype.kind in "biuf":
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{name}: array contains NaN or infinite values")
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise ImageError(f"{name}: values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if array.dtype.kind == "f" and high <= 1.0 else 1.0
        out = np.clip(values * scale, 0, 255).round().astype(np.uint8)
    else:
        raise ImageError(f"{name}: array dtype {array.dtype}; expected uint8 or float")
    return 255 - out if invert else out


def _too_large(name: str, size: tuple[int, int] | None) -> str:
    declared = f"declares {size[0]}x{size[1]} pixels" if size else "is too large"
    return f"{name}: image {declared}, over the {MAX_PIXELS // 1_000_000}-megapixel limit; refused (shrink it first)"


def _fmt(content: bytes) -> str:
    """The format a file's magic number claims ("image" when none of ours)."""
    for magic, fmt in ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP")):
        if content.startswith(magic):
            return fmt
    return "WebP" if content[:4] == b"RIFF" and content[8:12] == b"WEBP" else "image"


def _png_size(content: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, read directly (Pillow refuses 0x0 headers)."""
    if len(content) < 24 or content[12:16] != b"IHDR":
        return None
    return int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160] if text else type(exc).__name__
