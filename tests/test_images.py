"""The one image path: decoding (rdfia_jax.data.decode) and torchvision-equivalent resizing
(rdfia_jax.data.transforms), against Pillow-computed expectations and fixed pre-refactor numbers."""

import hashlib
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from rdfia_jax.data.decode import IMAGE_EXTENSIONS, MAX_PIXELS, array_to_image, decode, open_image
from rdfia_jax.data.transforms import gan_resize32, imagenet_resize, load_images, prepare_images, resize_image
from rdfia_jax.errors import RdfiaError


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


# ----------------------------------------------------------------------------- the one decoder: modes


def test_decode_keeps_gray_on_request_and_applies_exif(tmp_path):
    g = np.random.default_rng(6).integers(0, 256, size=(12, 20), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(g, mode="L").save(tmp_path / "g.png", exif=exif)
    want = np.asarray(Image.fromarray(g).transpose(Image.Transpose.ROTATE_270))
    kept = decode(tmp_path / "g.png", keep_gray=True)
    assert kept.shape == (20, 12, 1)
    np.testing.assert_array_equal(kept[..., 0], want)
    np.testing.assert_array_equal(decode(tmp_path / "g.png"), np.repeat(kept, 3, axis=-1))
    np.testing.assert_array_equal(decode((tmp_path / "g.png").read_bytes(), keep_gray=True), kept)  # bytes in
    # datasets are read as torchvision's ImageFolder reads them: no EXIF rotation
    np.testing.assert_array_equal(decode(tmp_path / "g.png", keep_gray=True, exif=False)[..., 0], g)


def test_16bit_gray_is_scaled_on_every_path(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 1000, 50000]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "d.png")
    want = np.rint(v / 65535.0 * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(decode((tmp_path / "d.png").read_bytes(), keep_gray=True, exif=False)[..., 0], want)
    np.testing.assert_array_equal(decode(tmp_path / "d.png")[..., 1], want)


def test_float_mode_f_tiff_is_scaled(tmp_path):
    unit = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.1]], np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
    np.testing.assert_array_equal(decode(tmp_path / "f.tif", keep_gray=True)[..., 0],
                                  np.rint(unit * 255.0).astype(np.uint8))
    wide = np.array([[0.0, 12.4, 300.0]], np.float32)  # not in [0, 1]: taken as 0-255 values, clipped
    Image.fromarray(wide, mode="F").save(tmp_path / "w.tif")
    np.testing.assert_array_equal(decode(tmp_path / "w.tif", keep_gray=True)[..., 0], [[0, 12, 255]])


def test_rgba_la_and_cmyk(tmp_path):
    a = np.random.default_rng(7).integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(decode(tmp_path / "a.png"), a[..., :3])
    Image.fromarray(a[..., :2], mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(decode(tmp_path / "la.png", keep_gray=True)[..., 0], a[..., 0])
    cmyk = Image.fromarray(a, mode="RGBA").convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
        want = np.asarray(im.convert("RGB"))
    got = decode(tmp_path / "c.jpg")
    assert got.shape == (9, 11, 3)
    np.testing.assert_array_equal(got, want)


def test_one_extension_list():
    from rdfia_jax.data.datasets import scene15
    from rdfia_jax.transfer import pipeline
    from rdfia_jax.weights import evaluate

    assert scene15.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS and pipeline.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert evaluate.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- the size guard


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB (no pixel data): costs nothing to write."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [15000, 10000])  # above Pillow's error threshold; between warning and error
def test_size_guard_refuses_huge_images_before_decoding(tmp_path, side):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(side, side))
    for call in (lambda: open_image(path), lambda: decode(path), lambda: decode(path.read_bytes(), name=str(path)),
                 lambda: load_images([path])):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning either
            with pytest.raises(RdfiaError) as err:
                call()
        assert time.perf_counter() - t0 < 1.0
        msg = str(err.value)
        assert "huge.png" in msg and f"{side}x{side}" in msg and f"{MAX_PIXELS:,}" in msg


def test_size_guard_limit_is_a_parameter(tmp_path):
    Image.fromarray(_rgb(40, 50)).save(tmp_path / "s.png")
    assert decode(tmp_path / "s.png", max_pixels=2000).shape == (40, 50, 3)
    with pytest.raises(RdfiaError, match=r"s.png: image is 50x40 \(2,000 pixels\), above the limit of 1,999"):
        decode(tmp_path / "s.png", max_pixels=1999)


def test_cli_predict_refuses_a_huge_png_without_traceback(tmp_path, capsys):
    from rdfia_jax.cli import main

    (tmp_path / "huge.png").write_bytes(_png_header(15000, 15000))
    assert main(["predict", "squeezenet1_1", "--random-weights", str(tmp_path / "huge.png")]) == 2
    err = capsys.readouterr().err
    assert "15000x15000" in err and "Traceback" not in err and "DecompressionBomb" not in err


# ----------------------------------------------------------------------------- numbers unchanged

# sha256 (first 16 hex) of outputs computed with the implementation before the image paths were merged
# (rdfia_jax/images.py, data/transforms.py, transfer/features.prepare_images at commit 5264a3b).
BEFORE = {
    "rgb-resize": "4b2b7b6a4866a028", "rgb-crop": "9244ef3c390ddeac", "rgb-prep-crop-112": "389971a1d6aae423",
    "rgb-imagenet-center": "9244ef3c390ddeac", "tall-resize": "88e2f07e218cc7f1", "tall-crop": "d6acdd402c0aa019",
    "tall-prep-crop-112": "4f0b0aba3bebbb2a", "tall-imagenet-center": "d6acdd402c0aa019",
    "gray-resize": "4161782df7250d10", "gray-crop": "a67684415ac1df32", "gray-prep-crop-112": "6297a1f32a6830b5",
    "gray-imagenet-center": "a67684415ac1df32", "gan32": "0e90b1ceaf13848c",
}
BEFORE_CROP4 = [[119, 121, 112, 124], [126, 118, 115, 124], [135, 128, 123, 130], [122, 134, 125, 120]]


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()[:16]


def test_resize_numbers_unchanged_by_the_merge():
    rng = np.random.default_rng(20)
    cases = {"rgb": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
             "tall": rng.integers(0, 256, (301, 199, 3), dtype=np.uint8),
             "gray": rng.integers(0, 256, (45, 31), dtype=np.uint8)}
    got = {}
    for name, a in cases.items():
        for mode in ("resize", "crop"):
            got[f"{name}-{mode}"] = _digest(resize_image(array_to_image(a), mode, 224))
        got[f"{name}-prep-crop-112"] = _digest(prepare_images([a], "crop", 112))
        got[f"{name}-imagenet-center"] = _digest(imagenet_resize(a, "center_crop"))
    got["gan32"] = _digest(gan_resize32(rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)))
    assert got == BEFORE
    small = resize_image(array_to_image(cases["rgb"]), "crop", 4, resize_to=6)
    np.testing.assert_array_equal(small[..., 0], BEFORE_CROP4)


def test_gray_images_resize_as_one_channel_equal_to_their_rgb_copy():
    from rdfia_jax.data.transforms import resize_array

    rng = np.random.default_rng(21)
    for shape in ((256, 256), (220, 300, 1), (301, 199), (45, 31, 1)):
        gray = rng.integers(0, 256, shape, dtype=np.uint8)
        rgb = np.repeat(gray.reshape(shape[:2])[..., None], 3, axis=-1)
        for mode, size in (("resize", 224), ("crop", 224), ("crop", 112)):
            fast = resize_array(gray, mode, size)
            assert fast.shape == (size, size, 3) and fast.dtype == np.uint8
            np.testing.assert_array_equal(fast, resize_array(rgb, mode, size), err_msg=f"{shape} {mode} {size}")
    with pytest.raises(RdfiaError, match="unknown resize mode"):
        resize_array(gray, "stretch")


# ----------------------------------------------------------------------------- batched evaluation


def test_weights_evaluate_batched_equals_unbatched(tmp_path):
    """weights.evaluate over map_batches (ragged last batch, several decode chunks) counts exactly what one
    unbatched forward pass over the same decoded images gives."""
    from rdfia_jax import models
    from rdfia_jax.weights import load_network
    from rdfia_jax.weights.evaluate import evaluate

    rng = np.random.default_rng(9)
    paths = []
    for i in range(11):
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
        paths.append(tmp_path / f"{i:02d}.png")
    net = load_network("squeezenet1_1", random_weights=True, seed=0)
    x = net.preprocessing.normalize(load_images(paths, mode="crop").astype(np.float32) / np.float32(255.0))
    order = np.argsort(-np.asarray(models.forward(net.graphdef, net.state, x)[0]), axis=1)
    labels = np.concatenate([order[:4, 0], order[4:8, 3], order[8:, 7]])  # 4 top-1, 4 more top-5, 3 misses
    for batch_size in (1, 3, 11):  # 1: two decode chunks of 8; 3: ragged last batch
        res = evaluate(net, paths, labels, batch_size=batch_size)
        assert (res.n, res.top1_correct, res.top5_correct) == (11, 4, 8)
