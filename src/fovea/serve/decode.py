"""Uploaded bytes -> (H, W, 3) uint8 RGB, refused cleanly when they are not a usable image.

Everything happens in memory: the bytes of a request never become a path. The checks, in order:
the declared content type (415 when it is not an image or octet-stream), an empty body (400), the
format read from the header (415 when no decoder knows it), the pixel count read from the header
BEFORE decoding (413: a "pixel bomb" of a few KB that would decode to gigabytes is refused without
allocating it), then the decode itself (400 when truncated or corrupt). The conversion rules are
those of `fovea.io.image` (grayscale, palette, alpha on black, 16 bit, EXIF orientation).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fovea.errors import DataError
from fovea.io.image import apply_exif_orientation, to_rgb_uint8

# content types accepted for an image part or a raw body (besides image/*)
GENERIC_TYPES = ("application/octet-stream", "")
_EXIF_ORIENTATION = 0x0112


class UploadRejected(DataError):
    """An upload the server refuses; `status` is the HTTP code (400, 413, 415), `reason` the why."""

    def __init__(self, status: int, name: str, reason: str, fix: str):
        self.status, self.name, self.reason = status, name, reason
        super().__init__(f"upload {name!r}: {reason}. Fix: {fix}")


def check_content_type(content_type: str | None, name: str) -> None:
    """415 unless the declared type is image/* or a generic binary type (the bytes decide then)."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct.startswith("image/") or ct in GENERIC_TYPES:
        return
    raise UploadRejected(415, name, f"content type {ct!r} is not an image",
                         "send image/png, image/jpeg, ... (multipart field `file` or a raw body)")


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Bytes of an image file -> (H, W, 3) uint8 RGB; raises UploadRejected (400/413/415)."""
    if not data:
        raise UploadRejected(400, name, "the upload is empty (0 bytes)", "send the image file's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise UploadRejected(415, name, f"not a recognised image format ({len(data)} bytes, starts "
                                        f"{data[:8]!r})", "send a PNG, JPEG, BMP, TIFF or WebP file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadRejected(413, name, f"the header declares more pixels than allowed ({exc})",
                             f"send at most {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadRejected(400, name, f"corrupt image header ({exc})", "re-encode the image") from None
    w, h = im.size
    if w * h > max_pixels:
        raise UploadRejected(413, name, f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}",
                             "downscale the image or start the server with a larger --max-pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        arr = _colour16(data, im)
        if arr is None:
            arr = _to_array(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UploadRejected(400, name, f"corrupt or truncated image data ({exc})",
                             "send the complete file") from None
    try:
        return apply_exif_orientation(to_rgb_uint8(arr), orientation)
    except DataError as exc:
        raise UploadRejected(400, name, str(exc), "send an 8 or 16 bit grayscale, RGB or RGBA image") from None


def _colour16(data: bytes, im: Image.Image) -> np.ndarray | None:
    """16-bit-per-sample colour PNG/TIFF decoded with OpenCV as (H, W, 3|4) uint16 RGB(A), else None.

    Pillow keeps only the high byte of such files; `fovea.io.read_image` decodes them the same way."""
    if im.mode not in ("RGB", "RGBA"):
        return None
    png16 = data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 16
    bits = getattr(im, "tag_v2", {}).get(258) if hasattr(im, "tag_v2") else None
    bits = bits if isinstance(bits, (tuple, list)) else (bits,)
    if not png16 and not any(b is not None and int(b) > 8 for b in bits):
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    return arr[..., [2, 1, 0, 3][: arr.shape[2]]]


def _to_array(im: Image.Image) -> np.ndarray:
    """A loaded PIL image as an array `to_rgb_uint8` understands (16-bit kept, palettes expanded)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if mode in ("L", "RGB", "RGBA", "LA"):
        return np.asarray(im)
    if mode in ("P", "PA", "RGBa", "La"):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))
