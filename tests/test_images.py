"""Image decoding and torchvision-equivalent resizing, against Pillow-computed expectations."""

import numpy as np
import pytest
from PIL import Image

from rdfia_jax.errors import RdfiaError
from rdfia_jax.images import load_images, open_image, resize_image


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_resize_mode_equals_pillow_bilinear(tmp_path):
    arr = _rgb(300, 400)
    Image.fromarray(arr).save(tmp_path / "a.png")
    got = load_images([tmp_path / "a.png"], "resize", 224)[0]
    want = np.asarray(Image.fromarray(arr).resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("w,h", [(400, 300), (300, 400), (256, 256), (333, 257)])
def test_crop_mode_is_torchvision_resize256_centercrop224(w, h):
    img = Image.fromarray(_rgb(h, w, 1))
    got = resize_image(img, "crop", 224)
    short = min(w, h)
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    assert min(nw, nh) == 256 and max(nw, nh) == int(256 * max(w, h) / short)
    big = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    want = np.asarray(big)[top:top + 224, left:left + 224]
    np.testing.assert_array_equal(got, want)


def test_grayscale_is_replicated(tmp_path):
    g = np.random.default_rng(2).integers(0, 256, size=(30, 20), dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    img = np.asarray(open_image(tmp_path / "g.png"))
    assert img.shape == (30, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], g)


def test_rgba_drops_alpha(tmp_path):
    a = np.random.default_rng(3).integers(0, 256, size=(10, 12, 4), dtype=np.uint8)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "a.png")), a[..., :3])


def test_palette_is_expanded(tmp_path):
    rgb = Image.fromarray(_rgb(16, 16, 4)).quantize(colors=8)
    rgb.save(tmp_path / "p.png")
    want = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "p.png")), want)


def test_16bit_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 1000, 50000]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")
    got = np.asarray(open_image(tmp_path / "d.png"))[..., 0]
    np.testing.assert_array_equal(got, np.rint(v / 65535.0 * 255.0).astype(np.uint8))
    assert got.max() == 255 and got[0, 2] == 128  # a naive convert("RGB") would clip most of these to 255


@pytest.mark.parametrize("orientation,transform", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                                   (8, Image.Transpose.ROTATE_90), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_applied(tmp_path, orientation, transform):
    arr = _rgb(20, 30, 5)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "e.png", exif=exif)
    want = np.asarray(img.transpose(transform))
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "e.png")), want)


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(RdfiaError, match="broken.jpg"):
        open_image(bad)
    with pytest.raises(RdfiaError, match="image not found: .*nope.png"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(RdfiaError, match="unknown resize mode"):
        resize_image(Image.fromarray(_rgb(4, 4)), "stretch")
