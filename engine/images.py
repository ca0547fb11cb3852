"""The one image loader of the project: every image file becomes an HxWx3 uint8 RGB array.

Decoding: the bytes are read with ``np.fromfile`` (non-ASCII paths work on every OS) and decoded
with ``cv2.imdecode(..., IMREAD_UNCHANGED)`` so that bit depth and alpha survive. That flag skips
EXIF orientation, so the tag is read from the header with Pillow and applied here. Bytes OpenCV
cannot decode go to Pillow (with ``ImageOps.exif_transpose``), and so do TIFFs with an Orientation
tag or alpha, which OpenCV 5 gets wrong (orientation applied only in part, RGBA premultiplied,
gray alpha dropped). Any failure raises ``ImageLoadError`` naming the file and the reason.

Conversion to 8-bit RGB (``to_rgb8``):
  * depth: uint8 as is; uint16 -> value/257 rounded (0 -> 0, 65535 -> 255); other integer types
    map their full dtype range linearly onto 0..255; floats are taken as [0, 1], clipped, NaN -> 0;
    bool -> 0/255.
  * channels: 2-D or 1 channel = gray (replicated); 2 = gray+alpha; 3 = colour; 4 = colour+alpha.
  * alpha is composited over WHITE: a transparent area then looks as it does in an image viewer
    or on a web page, instead of turning black, which would read as a dark object.
Palette and CMYK images come out as the colours a viewer shows (both decoders expand them).

Size guard: images above ``MAX_PIXELS`` are refused from their header, before any pixel decode.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from chimera_engine.limits import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, ImageTooLargeError, check_image_size

# OpenCV reads its own decode limit once, when it loads: where this module is the first to import it,
# that limit becomes ours too, which guards the few files whose header Pillow cannot read.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from chimera_engine.errors import ImageLoadError  # noqa: E402

IMAGE_SUFFIXES: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif",
    ".jp2", ".j2k", ".pbm", ".pgm", ".ppm", ".pnm",
})

MAX_PIXELS = MAX_IMAGE_PIXELS  # chimera_engine.limits says why 200 megapixels

_log = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_PILLOW_LIMIT_LOCK = threading.Lock()

# EXIF orientation -> the operation that makes the stored pixels upright (as exif_transpose does).
_UPRIGHT = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class _Header(NamedTuple):
    width: int  # as stored, before orientation
    height: int
    orientation: int  # 1..8; 1 (or anything unknown) = as stored
    format: str  # Pillow's format name, e.g. "JPEG", "TIFF"
    mode: str  # Pillow's mode, e.g. "RGB", "LA", "I;16"


class ImageList(list):
    """The images found by ``find_images`` (a list of Paths), plus ``skipped``: one message per
    entry that was passed over (a broken or looping link, an unreadable folder)."""

    def __init__(self, paths=(), skipped=()):
        super().__init__(paths)
        self.skipped: list[str] = list(skipped)


def find_images(root: str | os.PathLike[str]) -> ImageList:
    """All image files under ``root`` (recursive), sorted by their relative POSIX path.

    Suffixes match case-insensitively. Hidden files and folders (name starting with '.', e.g. a
    ``.chimera`` project folder) are skipped. Symlinked folders are followed, but each real folder
    is visited once, so link loops end. What cannot be followed or listed — a link that points
    nowhere or to itself, a folder without read permission — does not stop the walk: it is named
    in the result's ``skipped`` and logged as a warning, never dropped in silence.
    """
    root = Path(root)
    try:
        if not root.is_dir():
            reason = "not a folder" if root.exists() or root.is_symlink() else "no such folder"
            raise ImageLoadError(f"cannot list images in '{root}': {reason}")
    except OSError as exc:  # e.g. ELOOP: the folder is a link to itself
        raise ImageLoadError(f"cannot list images in '{root}': {exc.strerror or exc}") from exc
    found = ImageList()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            if folder == root:
                raise ImageLoadError(f"cannot list images in '{root}': {exc.strerror or exc}") from exc
            found.skipped.append(f"{folder}: folder not read ({exc.strerror or exc})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            kind = _entry_kind(entry)
            if kind == "dir":
                stack.append(Path(entry.path))
            elif kind == "file" and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                found.append(Path(entry.path))
            elif kind.startswith("skip:"):
                found.skipped.append(f"{entry.path}: {kind[5:]}")
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    for message in found.skipped:
        _log.warning("skipped %s", message)
    return found


def _entry_kind(entry: os.DirEntry) -> str:
    """"dir", "file", "other" (a socket, a pipe: not ours to read), or "skip:<reason>" for a link
    that cannot be followed."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        if not entry.is_symlink():
            return "other"
        os.stat(entry.path)  # a link to a pipe or socket stats fine: "other"
        return "other"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "skip:symbolic link loop (the link points back to itself)"
        if exc.errno == errno.ENOENT:
            try:
                target = os.readlink(entry.path)
            except OSError:
                target = "?"
            return f"skip:broken symbolic link (points to '{target}', which does not exist)"
        return f"skip:cannot be read ({exc.strerror or exc})"


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB, C-contiguous array at full resolution.

    EXIF orientation is applied, so H and W are those of the upright image.
    Raises ImageLoadError for a missing, empty, corrupt, unsupported or too large file.
    """
    path = Path(path)
    _check_exists(path)
    header = _read_header(path)  # the declared size is checked before a byte of pixels is read
    if header is not None:
        _check_size(path, header.width, header.height)
        if header.format == "TIFF" and (header.orientation != 1 or header.mode in _ALPHA_MODES):
            return _load_with_pillow(path)
    data = _read_bytes(path)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # None if it cannot decode the bytes
    except cv2.error:
        decoded = None  # e.g. OpenCV's own limits: Pillow gets its chance
    if decoded is None:
        return _load_with_pillow(path)
    _check_size(path, decoded.shape[1], decoded.shape[0])
    rgb = _convert(path, decoded, "bgr")
    upright = _UPRIGHT.get(header.orientation if header else 1)
    return np.ascontiguousarray(upright(rgb) if upright else rgb)


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of the upright image (after EXIF orientation), read from the header.

    The few files whose header Pillow cannot parse (e.g. 3-channel float TIFF) are decoded instead.
    """
    path = Path(path)
    _check_exists(path)
    header = _read_header(path)
    if header is None:
        height, width = load_image(path).shape[:2]
        return width, height
    if header.orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def to_rgb8(array: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Convert an HxW or HxWxC (C in 1..4) array of any numeric dtype to HxWx3 uint8 RGB.

    ``channel_order`` ("bgr" as OpenCV decodes, or "rgb") says how colour channels are stored.
    Raises ValueError for an unsupported shape, dtype or channel order (a programming error).
    """
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', not {channel_order!r}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise ValueError(f"expected an HxW or HxWxC image with C in 1..4, got shape {array.shape}")
    pixels = _to_uint8(array)
    channels = pixels.shape[2]
    colour = pixels[:, :, :1] if channels <= 2 else pixels[:, :, :3]
    if channels >= 3 and channel_order == "bgr":
        colour = colour[:, :, ::-1]
    if channels in (2, 4):
        colour = _composite_over_white(colour, pixels[:, :, -1:])
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour)


def _fail(path: Path, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot read '{path}': {reason}")


def _check_exists(path: Path) -> None:
    """A regular file of a size we read: a pipe or a device would block or never end."""
    try:
        info = path.stat()
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
        raise _fail(path, reason) from exc
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "not a regular file (a pipe, socket or device)")
    if info.st_size > MAX_IMAGE_FILE_BYTES:
        raise ImageTooLargeError(f"cannot read '{path}': the file is {info.st_size / 2**30:.1f} GiB, more than "
                                 f"the limit of {MAX_IMAGE_FILE_BYTES / 2**30:.0f} GiB for one image")


def _read_bytes(path: Path) -> np.ndarray:
    """The whole file as a 1-D uint8 array; ImageLoadError if missing, unreadable or empty."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from exc
    if data.size == 0:
        raise _fail(path, "file is empty")
    return data


def _check_size(path: Path, width: int, height: int) -> None:
    check_image_size(width, height, f"cannot read '{path}'", max_pixels=MAX_PIXELS, error=ImageTooLargeError)


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int | None) -> Iterator[None]:
    # Pillow's bomb limit is one process-wide number (default ~89 MP, error at twice that, far
    # below MAX_PIXELS) and there is no per-call one: it is swapped only around our own calls,
    # under a lock, and restored at once. MAX_PIXELS, checked by us, is what really guards.
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_header(path: Path) -> _Header | None:
    """What Pillow's header parse tells (no pixel decode); None if Pillow cannot parse it."""
    try:
        # No limit here: the exact size is compared with MAX_PIXELS by the caller.
        with _pillow_pixel_limit(None), Image.open(path) as im:
            # The base-class getexif reads only what the header parse found; PNG's override
            # would decode every pixel to look for an eXIf chunk after the image data.
            orientation = Image.Image.getexif(im).get(_ORIENTATION_TAG, 1)
            width, height = im.size
            file_format, mode = im.format or "", im.mode
            if file_format == "TIFF":  # recent Pillow reports TIFF sizes upright: take the stored
                width, height = im.tag_v2.get(256, width), im.tag_v2.get(257, height)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - any failure of Pillow just means "ask OpenCV"
        return None
    orientation = orientation if isinstance(orientation, int) and orientation in _UPRIGHT else 1
    return _Header(width, height, orientation, file_format, mode)


def _load_with_pillow(path: Path) -> np.ndarray:
    """Decode with Pillow, upright, as HxWx3 uint8 RGB."""
    try:
        # Plugins check frame and tile sizes against Pillow's limit: make it ours meanwhile.
        with _pillow_pixel_limit(MAX_PIXELS), Image.open(path) as im:
            _check_size(path, *im.size)
            array = np.asarray(_array_friendly(ImageOps.exif_transpose(im)))
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"image is too large (a frame exceeds {MAX_PIXELS} pixels)") from exc
    except MemoryError as exc:
        raise _fail(path, "not enough memory to decode it") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise _fail(path, "not a decodable image (corrupt or unsupported format)") from exc
    return _convert(path, array, "rgb")


def _array_friendly(im: Image.Image) -> Image.Image:
    """The image in a mode whose ``np.asarray`` to_rgb8 reads right (gray/colour, +alpha)."""
    if im.mode in ("L", "LA", "RGB", "RGBA", "I", "F") or im.mode.startswith("I;16"):
        return im
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    converted = {"1": "L", "La": "LA", "RGBa": "RGBA"}.get(im.mode, "RGB")
    return im.convert(converted)  # CMYK, YCbCr, LAB, ...: as a viewer shows them


def _convert(path: Path, array: np.ndarray, channel_order: str) -> np.ndarray:
    try:
        return to_rgb8(array, channel_order)
    except ValueError as exc:  # e.g. a 5-band TIFF
        raise _fail(path, f"unsupported pixel layout {array.shape} {array.dtype}") from exc


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """The same shape as uint8, by the depth rules of the module docstring."""
    if not array.dtype.isnative:  # e.g. Pillow's big-endian "I;16B"
        array = array.astype(array.dtype.newbyteorder("="))
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if dtype == np.uint16:
        # Exact integer rounding of value/257; 257 is odd, so there is never a tie.
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scaled = (array.astype(np.float64) - info.min) * (255.0 / (float(info.max) - info.min))
        return np.rint(scaled).astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        unit = np.clip(np.nan_to_num(array.astype(np.float32), nan=0.0), 0.0, 1.0)
        return np.rint(unit * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {dtype}")


def _composite_over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """colour * a + white * (1 - a) for HxWxC uint8 colour and HxWx1 alpha, rounded.

    Written as 255 - (255 - colour) * a so that opaque pixels stay exactly as they are.
    """
    a = alpha.astype(np.uint16)
    return (255 - ((255 - colour.astype(np.uint16)) * a + 127) // 255).astype(np.uint8)
