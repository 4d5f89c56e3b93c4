"""Turn image files, `.npy` arrays and IDX files into Fashion-MNIST-style 28x28 uint8 images.

Photos (PNG, JPEG, BMP, GIF, WebP; any size or colour mode) go through the steps Zalando used
to make Fashion-MNIST (Xiao et al., 2017), in the order that fits a finished photo:

1. decode the first frame, apply the EXIF orientation, flatten transparency onto the
   background colour (black with `invert=False`, white with `invert=True`, by default black behind a
   light object and white behind a dark one), convert to 8-bit grayscale
   (16-bit and float images are rescaled, not clipped);
2. negate the intensities of a photo with a light background: Fashion-MNIST items are light on a
   dark background, so dark-on-light product photos must be inverted. By default (`invert=None`)
   the background is read off the picture's border (its median above mid-grey means light);
   `invert=True/False` forces it;
3. trim the edges whose pixels are within 5% of the corner colour, leaving the object's
   bounding box (an image with nothing but background is kept whole);
4. resize so that the longest side is 28 pixels, keeping the aspect ratio (Lanczos);
5. centre the result on a 28x28 black canvas.

`.npy` files hold one image (28, 28) or a stack (N, 28, 28): uint8, or floats in [0, 1] or
[0, 255]; they and IDX files are taken as already prepared (no trimming, and no inversion unless
`invert=True`). Every problem raises `ImageError` with a message that names the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fmlab.errors import FmlabError
from fmlab.io import limit_bytes, read_limited

SIZE = 28
MAX_PIXELS = 50_000_000  # decompression-bomb guard: larger images are refused before decoding
MAX_BYTES = 64 << 20  # largest decompressed IDX content accepted
LIMIT_VARIABLE = "FMLAB_MAX_INPUT_MB"  # raises the 64 MiB limit on the bytes of an input file
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # never EPS & co, whose plugins run external programs
TRIM_TOLERANCE = 0.05 * 255
BORDER = 0.05  # the outer 5% of each side is the border the background is read from
NPY_MAGIC = b"\x93NUMPY"
GZIP_MAGIC = b"\x1f\x8b"


class ImageError(FmlabError):
    """An input image or array file is unreadable, empty, too large or of the wrong shape."""


THUMBNAIL = 112  # the longer side of the picture kept to show next to what the model saw


class Prepared(NamedTuple):
    images: np.ndarray  # (N, 28, 28) uint8, light object on dark background
    steps: str  # what was done to get there, for the user
    picture: np.ndarray | None = None  # a picture file's grayscale, at most 112 px on its longer side


def load(path: str | Path, invert: bool | None = None) -> np.ndarray:
    """Read one file into uint8 images of shape (N, 28, 28), light object on dark background. Only regular
    files of at most 64 MiB ($FMLAB_MAX_INPUT_MB) are read."""
    return read(path, invert).images


def read(path: str | Path, invert: bool | None = None) -> Prepared:
    """`load`, with a sentence saying what was done to the file's pixels."""
    path = Path(path)
    try:
        content = read_limited(path, limit_bytes(LIMIT_VARIABLE, 64), "input files", LIMIT_VARIABLE)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    return _decode(content, str(path), invert)


def decode(content: bytes, name: str = "<bytes>", invert: bool | None = None) -> np.ndarray:
    """Like `load`, for the bytes of a file; the format is sniffed from the content, not the name."""
    return _decode(content, name, invert).images


def _decode(content: bytes, name: str, invert: bool | None) -> Prepared:
    if not content:
        raise ImageError(f"{name}: empty file")
    array = None
    if content.startswith(GZIP_MAGIC):
        array = _idx(_gunzip(content, name), name)
    elif content.startswith(NPY_MAGIC):
        array = _read_npy(content, name)
    elif len(content) >= 4 and content[:2] == b"\x00\x00":
        array = _idx(content, name)
    if array is not None:
        images = _from_array(array, name)
        return Prepared(255 - images, "inverted (--invert)") if invert else Prepared(images, "used as stored")
    gray = _read_picture(content, name, background={False: 0, True: 255}.get(invert))
    image, steps = prepare(gray, invert)
    return Prepared(image[None], steps, _thumbnail(gray))


def prepare(gray: np.ndarray, invert: bool | None = None) -> tuple[np.ndarray, str]:
    """A 2-D uint8 grayscale picture -> (28, 28) uint8 and what was done: invert (forced, or when the border
    is light), trim, resize longest side, centre."""
    from PIL import Image

    steps = []
    if invert is None:
        border = np.median(_border(gray))
        invert = bool(border > 127)
        steps.append(f"{'light' if invert else 'dark'} background (border median {border:.0f})"
                     + (": inverted" if invert else ""))
    elif invert:
        steps.append("inverted (--invert)")
    if invert:
        gray = 255 - gray
    height, width = gray.shape
    gray = _trim(gray)
    h, w = gray.shape
    steps.append(f"cropped {width}x{height} to the object's {w}x{h} box" if (h, w) != (height, width)
                 else f"{w}x{h}, nothing to crop")
    scale = SIZE / max(h, w)
    new_w, new_h = max(1, min(SIZE, round(w * scale))), max(1, min(SIZE, round(h * scale)))
    small = np.asarray(Image.fromarray(gray).resize((new_w, new_h), Image.Resampling.LANCZOS))
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    top, left = (SIZE - new_h + 1) // 2, (SIZE - new_w + 1) // 2  # odd margins: the extra pixel goes top/left
    canvas[top : top + new_h, left : left + new_w] = small
    steps.append(f"longer side scaled to {SIZE} px ({new_w}x{new_h}) and centred")
    return canvas, "; ".join(steps)


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = gray.shape
    scale = min(1.0, THUMBNAIL / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.LANCZOS))


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outer 5% (at least one pixel) of each side."""
    h, w = gray.shape
    dy, dx = max(1, round(BORDER * h)), max(1, round(BORDER * w))
    return np.concatenate([gray[:dy].ravel(), gray[-dy:].ravel(), gray[:, :dx].ravel(), gray[:, -dx:].ravel()])


def _trim(gray: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the pixels that differ from the corner colour by more than 5%."""
    corners = np.array([gray[0, 0], gray[0, -1], gray[-1, 0], gray[-1, -1]], dtype=np.int16)
    object_mask = np.abs(gray.astype(np.int16) - int(np.median(corners))) > TRIM_TOLERANCE  # int16: big photos
    rows, cols = np.flatnonzero(object_mask.any(axis=1)), np.flatnonzero(object_mask.any(axis=0))
    if rows.size == 0:
        return gray
    return gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _read_picture(content: bytes, name: str, background: int | None = 0) -> np.ndarray:
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


def _grayscale(image, background: int | None) -> np.ndarray:  # image: a PIL.Image.Image
    """Any Pillow mode -> uint8 gray; transparent pixels take the background colour (None: black behind a light
    object, white behind a dark one, judged by the opaque pixels)."""
    from PIL import Image

    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        values = values / 257.0 if mode != "F" and values.max(initial=0) > 255 else values
        values = values * 255.0 if mode == "F" and values.max(initial=0) <= 1.0 else values
        return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        if background is None:
            pixels = np.asarray(rgba)
            opaque = pixels[..., 3] > 127
            light = opaque.any() and np.median(np.asarray(rgba.convert("L"))[opaque]) > 127
            background = 0 if light else 255
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
        with warnings.catch_warnings():  # the header is parsed as Python: a hostile one must not print warnings
            warnings.simplefilter("error")
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


def _idx(content: bytes, name: str) -> np.ndarray:
    from fmlab.data import idx
    from fmlab.errors import DataError

    try:
        return idx.parse(content, name)
    except DataError as exc:
        raise ImageError(str(exc)) from None


def _from_array(array: np.ndarray, name: str) -> np.ndarray:
    """(28, 28) or (N, 28, 28) numeric array -> uint8 (N, 28, 28)."""
    shape = array.shape
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[1:] != (SIZE, SIZE) or array.shape[0] == 0:
        raise ImageError(f"{name}: array of shape {shape}; expected (28, 28) or (N, 28, 28) with N >= 1")
    if array.dtype == np.uint8:
        return array.copy()
    if array.dtype.kind in "biuf":
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{name}: array contains NaN or infinite values")
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise ImageError(f"{name}: values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if array.dtype.kind == "f" and high <= 1.0 else 1.0
        return np.clip(values * scale, 0, 255).round().astype(np.uint8)
    raise ImageError(f"{name}: array dtype {array.dtype}; expected uint8 or float")


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
