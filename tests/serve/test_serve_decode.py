"""Uploads decode exactly as files do (`fovea.io.read_image`), in memory: 16-bit colour and gray,
alpha, palette, CMYK, 1-bit and EXIF-rotated JPEG; 16-bit samples also against round(v / 257)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from fovea.io import read_image
from fovea.serve.decode import UploadRejected, check_content_type, decode_image


def _write_cases(d):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(d / "rgb16.png"), rgb16[..., ::-1])
    cv2.imwrite(str(d / "g16.png"), rng.integers(0, 65536, (20, 30), dtype=np.uint16))
    Image.fromarray(rgba).save(d / "rgba.png")
    Image.fromarray(rgba[..., :3]).convert("P", palette=Image.ADAPTIVE).save(d / "pal.png")
    Image.fromarray(rgba[..., :3]).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rgba[..., 0]).convert("1").save(d / "bw.png")
    im = Image.fromarray(rgba[..., :3])
    exif = im.getexif()
    exif[0x0112] = 6                                     # rotate 90 degrees clockwise to view
    im.save(d / "exif.jpg", exif=exif.tobytes())
    return rgb16


@pytest.mark.parametrize("name", ["rgb16.png", "g16.png", "rgba.png", "pal.png", "cmyk.jpg", "bw.png", "exif.jpg"])
def test_upload_decodes_like_the_file_reader(tmp_path, name):
    _write_cases(tmp_path)
    path = tmp_path / name
    got = decode_image(path.read_bytes(), name, max_pixels=10_000)
    want = read_image(path)
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if name == "exif.jpg":
        assert got.shape == (30, 20, 3)


def test_sixteen_bit_colour_is_scaled_not_truncated(tmp_path):
    rgb16 = _write_cases(tmp_path)
    got = decode_image((tmp_path / "rgb16.png").read_bytes(), "rgb16", max_pixels=10_000)
    np.testing.assert_array_equal(got, np.round(rgb16 / 257.0).astype(np.uint8))


def test_content_types():
    for ok in ("image/png", "image/jpeg; q=1", "application/octet-stream", "", None):
        check_content_type(ok, "x")
    for bad in ("text/plain", "application/json", "application/zip", "multipart/mixed"):
        with pytest.raises(UploadRejected) as e:
            check_content_type(bad, "x")
        assert e.value.status == 415
