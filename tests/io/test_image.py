"""fovea.io.image against known pixel values and Pillow's own EXIF transpose as the reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from fovea.errors import DataError, ImageReadError
from fovea.io import (IMAGE_EXTENSIONS, image_header_size, list_images, read_image, read_mask, to_rgb_uint8,
                      write_image)


def _rng_rgb(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    rgb = _rng_rgb()
    write_image(tmp_path / "a.png", rgb)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, rgb)
    # written in RGB order: Pillow (RGB) sees the same values
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), rgb)


def test_grayscale_is_repeated(tmp_path):
    g = np.arange(240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_composited_on_black(tmp_path):
    rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [255, 255, 255, 255], [90, 0, 255, 1]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    ref = np.round(rgba[..., :3].astype(float) * rgba[..., 3:].astype(float) / 255.0).astype(np.uint8)
    np.testing.assert_array_equal(out, ref)
    assert out[0, 0].tolist() == [100, 50, 25]  # 200*128/255 = 100.4, 100*128/255 = 50.2, 50*128/255 = 25.1
    assert out[0, 1].tolist() == [0, 0, 0]  # fully transparent -> black


def test_gray_alpha(tmp_path):
    la = np.array([[[200, 255], [200, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out[0, 0].tolist() == [200, 200, 200] and out[0, 1].tolist() == [0, 0, 0]


def test_16bit_gray_png(tmp_path):
    v = np.array([[0, 257, 128, 129, 26100, 65535, 65407, 1000]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), v)
    out = read_image(tmp_path / "g16.png")
    ref = np.round(v.astype(float) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], ref)
    assert out[0, :6, 0].tolist() == [0, 1, 0, 1, 102, 255]


def test_16bit_colour_png_is_scaled_not_truncated(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    rgb16[0, 0] = (26100, 65535, 0)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "c16.png")
    ref = np.round(rgb16.astype(float) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out, ref)
    assert out[0, 0].tolist() == [102, 255, 0]  # Pillow alone gives 101 (high byte) for 26100


def test_16bit_rgba_png(tmp_path):
    rgba16 = np.array([[[65535, 32896, 0, 65535], [65535, 65535, 65535, 0]]], np.uint16)
    cv2.imwrite(str(tmp_path / "c16a.png"), rgba16[..., [2, 1, 0, 3]])
    out = read_image(tmp_path / "c16a.png")
    assert out.tolist() == [[[255, 128, 0], [0, 0, 0]]]


def test_palette_image(tmp_path):
    idx = np.array([[0, 1, 2, 1]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.tolist() == [[[10, 20, 30], [200, 0, 0], [0, 0, 255], [200, 0, 0]]]


def _with_orientation(img: Image.Image, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rgb = _rng_rgb(5, 8, seed=orientation)
    im = Image.fromarray(rgb)
    path = tmp_path / f"o{orientation}.png"
    im.save(path, exif=_with_orientation(im, orientation))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    out = read_image(path)
    np.testing.assert_array_equal(out, ref)
    if orientation >= 5:
        assert out.shape[:2] == (8, 5)


def test_exif_rotated_jpeg(tmp_path):
    # 40x60 (h x w) landscape, red block in the top-left corner as stored
    rgb = np.full((40, 60, 3), 255, np.uint8)
    rgb[:10, :10] = (255, 0, 0)
    im = Image.fromarray(rgb)
    im.save(tmp_path / "r.jpg", quality=95, exif=_with_orientation(im, 6))  # 6 = rotate 90 deg clockwise
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (60, 40, 3)
    # after rotating clockwise the stored top-left corner is at the top-right
    assert out[:8, -8:, 0].mean() > 200 and out[:8, -8:, 1].mean() < 60
    assert out[:8, :8].min() > 200  # the old top-right corner is white


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing", "folder"])
def test_unreadable_files_raise_image_read_error(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.png"
    if kind == "truncated":
        write_image(tmp_path / "ok.png", _rng_rgb(64, 64))
        data = (tmp_path / "ok.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert info.value.reason


def test_read_mask_variants(tmp_path):
    ref = np.zeros((6, 7), bool)
    ref[1:3, 2:5] = True
    ref[5, 6] = True
    Image.fromarray(ref.astype(np.uint8) * 255, "L").save(tmp_path / "l.png")
    Image.fromarray(ref.astype(np.uint8), "L").save(tmp_path / "ones.png")  # 0/1 masks count as well
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[ref] = (0, 0, 7)  # only blue nonzero
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    # colour everywhere, alpha marks the defect
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[ref, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    # white paint on transparent black
    rgba2 = np.zeros((6, 7, 4), np.uint8)
    rgba2[ref] = 255
    Image.fromarray(rgba2, "RGBA").save(tmp_path / "rgba2.png")
    pal = Image.fromarray(ref.astype(np.uint8) * 3, "P")
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "p.png")
    cv2.imwrite(str(tmp_path / "m16.png"), ref.astype(np.uint16) * 300)
    for name in ("l", "ones", "rgb", "rgba", "rgba2", "p", "m16"):
        out = read_mask(tmp_path / f"{name}.png")
        assert out.dtype == bool and out.shape == (6, 7), name
        np.testing.assert_array_equal(out, ref, err_msg=name)


def test_read_mask_corrupt(tmp_path):
    (tmp_path / "m.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageReadError, match="m.png"):
        read_mask(tmp_path / "m.png")


def test_to_rgb_uint8_arrays():
    assert to_rgb_uint8(np.array([[True, False]])).tolist() == [[[255] * 3, [0] * 3]]
    assert to_rgb_uint8(np.array([[0.0, 0.5, 1.0]])).tolist() == [[[0] * 3, [128] * 3, [255] * 3]]
    assert to_rgb_uint8(np.array([[65535, 257]], np.uint16))[..., 0].tolist() == [[255, 1]]
    assert to_rgb_uint8(np.zeros((2, 2, 1), np.uint8)).shape == (2, 2, 3)
    with pytest.raises(DataError, match="channels-first"):
        to_rgb_uint8(np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(DataError, match="divide by 255"):
        to_rgb_uint8(np.full((2, 2, 3), 200.0))


def _png(path: Path, h: int = 4, w: int = 6) -> Path:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.zeros((h, w, 3), np.uint8)).save(path, format="PNG")
    return path


def test_list_images(tmp_path):
    for name in ("b.png", "a.JPG", "d.tiff"):
        _png(tmp_path / name)  # PIL reads by content, so a PNG named .JPG/.tiff is still readable
    (tmp_path / "c.txt").write_text("not an image")
    _png(tmp_path / "sub" / "e.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "d.tiff"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "d.tiff", "e.png"]
    assert [p.name for p in list_images(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in list_images(str(tmp_path / "**" / "*.png"))] == ["b.png", "e.png"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert list_images(tmp_path).skipped == []
    pattern = str(tmp_path / "*.bmp")
    with pytest.raises(DataError) as info:
        list_images(pattern)
    assert pattern in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in folder"):
        list_images(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "x.txt").write_text("x")
    with pytest.raises(DataError, match=r"other extensions: \.txt"):
        list_images(tmp_path / "texts")
    assert ".png" in IMAGE_EXTENSIONS


def test_list_images_bad_files_raise_or_are_skipped_and_listed(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")  # empty
    (tmp_path / "c.jpg").write_bytes(b"this is text, not a JPEG")
    _png(tmp_path / "d.png")
    with pytest.raises(ImageReadError) as info:
        list_images(tmp_path)
    assert str(tmp_path / "b.png") in str(info.value) and "--skip-bad" in str(info.value)
    found = list_images(tmp_path, skip_bad=True)
    assert [p.name for p in found] == ["a.png", "d.png"]
    assert [(p.name, "empty" in r or "not a recognised" in r) for p, r in found.skipped] == \
        [("b.png", True), ("c.jpg", True)]
    joined = found + list_images(tmp_path / "a.png")
    assert [p.name for p in joined] == ["a.png", "d.png", "a.png"] and len(joined.skipped) == 2
    assert len(list_images(tmp_path, check=False)) == 4  # no header check: every candidate is listed
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="every one of the 1 image file"):
        list_images(tmp_path / "bad", skip_bad=True)


def test_image_header_size_is_upright_and_matches_read_image(tmp_path):
    from PIL import Image as PILImage

    im = PILImage.fromarray(np.zeros((4, 7, 3), np.uint8))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the upright image is 7 high, 4 wide
    im.save(tmp_path / "r.jpg", exif=exif)
    assert image_header_size(tmp_path / "r.jpg") == read_image(tmp_path / "r.jpg").shape[:2] == (7, 4)
    with pytest.raises(ImageReadError, match="file not found"):
        image_header_size(tmp_path / "nope.png")


def test_write_image_mask_and_bad_extension(tmp_path):
    m = np.zeros((4, 5), bool)
    m[1, 2] = True
    write_image(tmp_path / "sub" / "m.png", m)
    assert np.asarray(Image.open(tmp_path / "sub" / "m.png")).tolist()[1][2] == 255
    np.testing.assert_array_equal(read_mask(tmp_path / "sub" / "m.png"), m)
    with pytest.raises(DataError, match="extension"):
        write_image(tmp_path / "m.xyz", m)
