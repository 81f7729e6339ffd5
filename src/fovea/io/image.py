"""Image reading and writing: every file becomes an (H, W, 3) uint8 RGB array, the same way.

Rules (applied by `read_image` and `to_rgb_uint8`):
- grayscale is repeated to three channels; palette images are expanded through their palette;
- alpha is composited on black (rgb * alpha / 255), so fully transparent pixels are black whatever
  colour they hide; this keeps the result independent of hidden colour values;
- 16-bit samples are scaled as round(v / 257), which maps 0..65535 exactly onto 0..255
  (Pillow alone truncates 16-bit colour PNG/TIFF to the high byte; we decode those with OpenCV);
- EXIF orientation (tags 1-8) is applied, so the array is upright as a viewer shows it;
- a missing, empty, truncated or undecodable file raises `ImageReadError(path, reason)`.
"""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fovea.errors import DataError, ImageReadError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = set("*?[")
_EXIF_ORIENTATION = 0x0112
_MASK_NATIVE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "La", "I", "F")


# ------------------------------------------------------------------------------ array conversion
def _scale16(a: np.ndarray) -> np.ndarray:
    """uint16-range integers -> uint8 with round(v / 257) (65535 -> 255 exactly)."""
    a = np.clip(a, 0, 65535).astype(np.uint32)
    return ((a + 128) // 257).astype(np.uint8)


def _to_uint8_samples(a: np.ndarray) -> np.ndarray:
    """Sample values of any supported dtype -> uint8 (bool, uint8, 16-bit ints, floats in [0, 1])."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16 or a.dtype == np.dtype(">u2"):
        return _scale16(a)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DataError(f"integer image with values {lo}..{hi} cannot be read as 8- or 16-bit samples. "
                            "Fix: scale it to 0..255 (uint8) or 0..65535 (uint16) first.")
        return a.astype(np.uint8) if hi <= 255 else _scale16(a)
    if np.issubdtype(a.dtype, np.floating):
        hi = float(np.nanmax(a)) if a.size else 0.0
        if hi > 1.0 + 1e-6:
            raise DataError(f"float image with maximum {hi:g}; fovea reads float images as values in [0, 1]. "
                            "Fix: divide by 255 (8-bit range) or by the maximum before converting.")
        return np.round(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise DataError(f"unsupported image dtype {a.dtype}. Fix: pass uint8, uint16, bool or float in [0, 1].")


def _composite_on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) colour x uint8 (H, W) alpha / 255, rounded."""
    prod = rgb.astype(np.uint16) * alpha.astype(np.uint16)[..., None]
    return ((prod + 127) // 255).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any image array -> (H, W, 3) uint8 RGB (channels-last, RGB order assumed).

    Accepts (H, W), (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) RGB, (H, W, 4) RGBA; dtypes uint8,
    uint16 (scaled round(v / 257)), bool (255 = True), floats in [0, 1]. Alpha is composited on black.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4) and a.shape[0] in (1, 3, 4):
        raise DataError(f"image array of shape {a.shape} looks channels-first. "
                        "Fix: transpose to (H, W, C), e.g. array.transpose(1, 2, 0).")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)) or 0 in a.shape:
        raise DataError(f"image array must be (H, W) or (H, W, C) with C in 1..4, got shape {a.shape}.")
    a = _to_uint8_samples(a)
    if a.ndim == 2:
        a = a[..., None]
    c = a.shape[2]
    if c == 1:
        out = np.repeat(a, 3, axis=2)
    elif c == 2:
        out = _composite_on_black(np.repeat(a[..., :1], 3, axis=2), a[..., 1])
    elif c == 3:
        out = a
    else:
        out = _composite_on_black(a[..., :3], a[..., 3])
    return np.ascontiguousarray(out)


def apply_exif_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an (H, W, ...) array upright for EXIF orientation 1-8 (same result as PIL exif_transpose)."""
    a = array
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, k=-1)
    elif orientation == 7:
        a = a[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        a = np.rot90(a, k=1)
    return np.ascontiguousarray(a)


# ----------------------------------------------------------------------------------- decoding
def _load_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "it is a folder, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    return data


def _is_16bit_colour(data: bytes, im: Image.Image) -> bool:
    """True for 16-bit-per-sample colour PNG/TIFF, which Pillow would truncate to the high byte."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25:
        return data[24] == 16  # IHDR bit depth
    tags = getattr(im, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        bits = bits if isinstance(bits, (tuple, list)) else (bits,)
        return any(b is not None and int(b) > 8 for b in bits)
    return False


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """Decoded PIL image -> array keeping 16-bit depth and alpha (converted later)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("L", "RGB", "RGBA", "LA"):
        return np.asarray(im)
    if mode in ("P", "PA", "RGBa", "La"):
        return np.asarray(im.convert("RGBA"))
    if mode == "1":
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(array before conversion, EXIF orientation) of an image file; raises ImageReadError."""
    data = _load_bytes(path)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except UnidentifiedImageError:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageReadError(path, f"not a recognised image format ({len(data)} bytes)") from None
        if arr.ndim == 3:
            arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] >= 3 else arr
        return arr, 1
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"corrupt or truncated image data ({exc})") from exc
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block must not hide good pixels
        orientation = 1
    if _is_16bit_colour(data, im):
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4):
            return arr[..., [2, 1, 0, 3][: arr.shape[2]]], orientation
    try:
        return _pil_to_array(im), orientation
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"cannot convert image mode {im.mode} ({exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, upright; see the module docstring for the rules."""
    p = Path(path)
    arr, orientation = _decode(p)
    try:
        rgb = to_rgb_uint8(arr)
    except DataError as exc:
        raise ImageReadError(p, str(exc)) from exc
    return apply_exif_orientation(rgb, orientation)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as (H, W) bool: any nonzero pixel is a defect.

    Colour masks: nonzero in any channel. With alpha: defect where alpha > 0 and the colour is
    nonzero; if the colour is black everywhere, the alpha channel alone is the mask. Palette
    masks use the palette index (index 0 = background). EXIF orientation is applied.
    """
    p = Path(path)
    data = _load_bytes(p)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        if im.mode in _MASK_NATIVE_MODES or im.mode.startswith("I;16"):
            arr = np.asarray(im)  # palette masks keep their indices
        else:
            arr = np.asarray(im.convert("RGB"))  # CMYK, YCbCr, ...
    except UnidentifiedImageError:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageReadError(p, f"not a recognised image format ({len(data)} bytes)") from None
        orientation = 1
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(p, f"corrupt or truncated mask data ({exc})") from exc
    if arr.ndim == 2:
        mask = arr != 0
    elif arr.shape[2] in (2, 4):
        colour, alpha = arr[..., :-1], arr[..., -1]
        colour_any = (colour != 0).any(axis=2)
        mask = (alpha != 0) & colour_any if colour_any.any() else alpha != 0
    else:
        mask = (arr != 0).any(axis=2)
    return apply_exif_orientation(mask, orientation)


def read_or_skip(path: str | os.PathLike, skip_bad: bool, skipped: list) -> np.ndarray | None:
    """`read_image(path)`, or with skip_bad None for an unreadable file, appended to `skipped` as
    (path string, reason); without skip_bad the ImageReadError propagates."""
    try:
        return read_image(path)
    except ImageReadError as exc:
        if not skip_bad:
            raise
        skipped.append((str(path), exc.reason))
        return None


# ----------------------------------------------------------------------------------- writing
def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image (any array `to_rgb_uint8` accepts; (H, W) uint8/bool stays one channel) losslessly
    for PNG/BMP/TIFF; creates parent folders; returns the path."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise DataError(f"cannot write {p}: unknown image extension {ext!r}. Fix: use one of "
                        f"{', '.join(IMAGE_EXTENSIONS)}.")
    a = np.asarray(image)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        out = _to_uint8_samples(a.reshape(a.shape[:2]))
    else:
        out = cv2.cvtColor(to_rgb_uint8(a), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, out)
    if not ok:
        raise DataError(f"OpenCV could not encode {p} as {ext}. Fix: write PNG instead.")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(buf.tobytes())
    return p


# ----------------------------------------------------------------------------------- listing
class ImageList(list):
    """A sorted list of image paths plus `skipped`: (path, reason) of files left out by skip_bad=True."""

    def __init__(self, paths: Iterable[Path] = (), skipped: Iterable[tuple[Path, str]] = ()):
        super().__init__(paths)
        self.skipped: list[tuple[Path, str]] = list(skipped)

    def __add__(self, other):  # keep the skipped files of both sides when listings are joined
        return ImageList(list(self) + list(other), self.skipped + list(getattr(other, "skipped", [])))

    def __iadd__(self, other):
        self.extend(other)
        self.skipped += list(getattr(other, "skipped", []))
        return self


def image_header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, upright (EXIF orientation applied), from its header only.

    Cheap (no pixel decoding), so it catches empty, non-image and header-corrupt files but not
    truncated pixel data; raises ImageReadError(path, reason) for an unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "file not found" if not p.exists() else "it is not a regular file")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "the file is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            w, h = im.size
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block must not hide good pixels
                orientation = 1
    except UnidentifiedImageError:
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED) if cv2.haveImageReader(str(p)) else None
        if arr is None:
            raise ImageReadError(p, f"not a recognised image format ({p.stat().st_size} bytes)") from None
        return int(arr.shape[0]), int(arr.shape[1])
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(p, f"corrupt image header ({exc})") from exc
    return (w, h) if orientation >= 5 else (h, w)


def _norm_exts(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _candidates(source: str | os.PathLike, exts: tuple[str, ...], recursive: bool) -> list[Path]:
    """Files with an image extension named by a file, a folder or a glob; DataError when none."""
    s = os.fspath(source)
    p = Path(s)
    if p.is_file():
        return [p]
    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        found = sorted(q for q in it if q.is_file() and q.suffix.lower() in exts)
        if not found:
            others = sorted({q.suffix.lower() or "(no extension)" for q in p.iterdir() if q.is_file()})
            hint = f" It holds files with other extensions: {', '.join(others)}." if others else ""
            raise DataError(f"no images in folder {p} (looked for {', '.join(exts)}"
                            f"{', recursively' if recursive else ''}).{hint} Fix: point at a folder of images "
                            "or pass a glob such as 'photos/**/*.jpg'.")
        return found
    if _GLOB_CHARS & set(s):
        found = sorted(Path(q) for q in glob.glob(s, recursive=True)
                       if Path(q).is_file() and Path(q).suffix.lower() in exts)
        if not found:
            raise DataError(f"no image files match the pattern {s!r} (extensions {', '.join(exts)}). "
                            "Fix: check the pattern; quote it so the shell does not expand it.")
        return found
    raise DataError(f"{s} does not exist. Fix: pass an image file, a folder of images or a glob pattern.")


def list_images(source: str | os.PathLike, *, recursive: bool = False, skip_bad: bool = False,
                check: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> ImageList:
    """Sorted image paths from an image file, a folder (its image files) or a glob pattern.

    The one place fovea lists images: files with an extension in IMAGE_EXTENSIONS (case-insensitive),
    sorted by path; `recursive` descends into sub-folders. With `check`, every file's header is
    opened (cheap, see `image_header_size`): an unreadable file raises ImageReadError naming it, or
    with `skip_bad=True` is left out and recorded in the result's `.skipped` as (path, reason).
    A missing path, an empty folder, a pattern that matches nothing, or a source whose every file
    is unreadable raises DataError naming the path and the fix.
    """
    exts = _norm_exts(extensions)
    candidates = _candidates(source, exts, recursive)
    if not check:
        return ImageList(candidates)
    kept, skipped = [], []
    for q in candidates:
        try:
            image_header_size(q)
        except ImageReadError as exc:
            if not skip_bad:
                raise
            skipped.append((q, exc.reason))
            continue
        kept.append(q)
    if not kept:
        raise DataError(f"every one of the {len(candidates)} image file(s) in {os.fspath(source)} is unreadable, "
                        f"e.g. {skipped[0][0]}: {skipped[0][1]}. Fix: replace the files or point at another "
                        "folder.")
    return ImageList(kept, skipped)
