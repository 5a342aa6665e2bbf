"""Proof tests of the attacks (FGSM, PGD, ADef) on small models built here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rdfia_jax.attacks import PixelBox, adef, fgsm, pgd
from rdfia_jax.attacks.resample import deform, gaussian_smooth, max_displacement, spatial_gradient
from rdfia_jax.errors import RdfiaError
from rdfia_jax.preprocess import TORCHVISION

H = W = 10
NUM_CLASSES = 5
# Jitted once: op-by-op eager dispatch would compile every primitive separately (slower).
deform_jit = jax.jit(deform)


def conv_apply(params, x):
    """A tiny conv net returning (logits, acts), the model contract."""
    h = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(h)
    logits = h.reshape(x.shape[0], -1) @ params["w"] + params["b"][None, :]
    return logits, {"hidden": h}


def conv_params(channels=3, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"k": jax.random.normal(k1, (3, 3, channels, 4), jnp.float32) * 0.5,
            "w": jax.random.normal(k2, (H * W * 4, NUM_CLASSES), jnp.float32) * 0.1,
            "b": jax.random.normal(k3, (NUM_CLASSES,), jnp.float32) * 0.1}


def images01(n, channels=3, seed=1):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, H, W, channels), jnp.float32)


MEAN = np.asarray(TORCHVISION.mean, np.float32).reshape(1, 1, 1, 3)
STD = np.asarray(TORCHVISION.std, np.float32).reshape(1, 1, 1, 3)


def normalize(x01):
    return jnp.asarray((np.asarray(x01) - MEAN) / STD)


def denormalize(x):
    return np.asarray(x) * STD + MEAN


def predictions(params, x):
    return np.asarray(jnp.argmax(conv_apply(params, x)[0], axis=-1))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_fgsm_pgd_stay_in_ball_and_pixel_box(method, norm, eps):
    box = PixelBox.from_preprocessing(TORCHVISION)
    params = conv_params()
    x = normalize(images01(8))
    y = predictions(params, x)
    if method == "fgsm":
        res = fgsm(conv_apply, params, x, y, eps=eps, norm=norm, box=box)
    else:
        res = pgd(conv_apply, params, x, y, eps=eps, norm=norm, steps=15, box=box, random_start=True,
                  key=jax.random.PRNGKey(3))
    adv = np.asarray(res.adversarial)
    lo, hi = (b.reshape(1, 1, 1, 3) for b in TORCHVISION.bounds())
    assert np.all(adv >= lo - 1e-6) and np.all(adv <= hi + 1e-6), "left the per-channel valid range"
    # Norms measured independently, in pixel units ([0, 1] RGB).
    d = denormalize(adv) - denormalize(x)
    measured = np.abs(d).max(axis=(1, 2, 3)) if norm == "linf" else np.sqrt((d ** 2).sum(axis=(1, 2, 3)))
    assert np.all(measured <= eps * (1 + 1e-5) + 1e-6)
    np.testing.assert_allclose(np.asarray(res.linf if norm == "linf" else res.l2), measured, rtol=1e-4, atol=1e-6)
    pred = predictions(params, res.adversarial)
    np.testing.assert_array_equal(np.asarray(res.pred), pred)
    np.testing.assert_array_equal(np.asarray(res.success), pred != y)
    assert res.success.shape == (8,) and res.iterations.dtype == jnp.int32
    if method == "pgd":
        assert np.asarray(res.success).mean() > 0.5


def linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"]


def test_targeted_attack_on_linear_model_moves_along_analytic_direction():
    # Two classes: the gradient of -CE(target) is (1 - p_t) (w_t - w_y), so the steps follow w_t - w_y.
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(H * W * 1, 2)), jnp.float32)
    params = {"w": w}
    x = jnp.full((3, H, W, 1), 0.5, jnp.float32)
    y = np.asarray(jnp.argmax(linear_apply(params, x), axis=-1))
    t = 1 - y
    direction = np.asarray(w[:, t] - w[:, y]).T.reshape(3, H, W, 1)  # w_t - w_y per image
    # L2 (FGM and PGD without random start): delta = eps * direction / ||direction||.
    for attack, kw in [(fgsm, {}), (pgd, dict(steps=4, step_size=0.05, random_start=False, early_stop=False))]:
        res = attack(linear_apply, params, x, y, eps=0.2, norm="l2", targeted=True, target=t, **kw)
        delta = np.asarray(res.adversarial - x)
        expected = 0.2 * direction / np.linalg.norm(direction.reshape(3, -1), axis=1).reshape(3, 1, 1, 1)
        np.testing.assert_allclose(delta, expected, atol=2e-6)
    # L-inf: delta = eps * sign(direction).
    res = fgsm(linear_apply, params, x, y, eps=0.1, norm="linf", targeted=True, target=t)
    np.testing.assert_allclose(np.asarray(res.adversarial - x), 0.1 * np.sign(direction), atol=1e-6)
    # Large enough budget: the target is reached.
    res = pgd(linear_apply, params, x, y, eps=0.5, norm="linf", steps=20, targeted=True, target=t)
    assert np.all(np.asarray(res.pred) == t) and np.all(np.asarray(res.success))


# ------------------------------------------------------------------------------- resampling


def test_identity_field_returns_the_image():
    x = images01(2)
    np.testing.assert_array_equal(np.asarray(deform_jit(x, jnp.zeros((2, H, W, 2), jnp.float32))), np.asarray(x))


def test_integer_shift_field_returns_the_shifted_image():
    x = np.asarray(images01(2))
    dx, dy = 2, -1  # sample 2 columns to the right, 1 row up
    tau = jnp.broadcast_to(jnp.asarray([dx, dy], jnp.float32), (2, H, W, 2))
    out = np.asarray(deform_jit(jnp.asarray(x), tau))
    rows = np.clip(np.arange(H) + dy, 0, H - 1)
    cols = np.clip(np.arange(W) + dx, 0, W - 1)
    np.testing.assert_allclose(out, x[:, rows][:, :, cols], atol=1e-6)
    np.testing.assert_allclose(out[:, 1:, :W - 2], x[:, :H - 1, 2:], atol=1e-6)  # interior: a plain shift


def test_bilinear_resampling_gradients_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.uniform(size=(2, 6, 7, 3)), jnp.float64)
        # Fractional parts in [0.2, 0.8] and coordinates inside the image: away from every kink.
        base = rng.integers(-1, 2, size=(2, 6, 7, 2)).astype(np.float64) + rng.uniform(0.2, 0.8, size=(2, 6, 7, 2))
        rows = np.arange(6)[None, :, None]
        cols = np.arange(7)[None, None, :]
        base[..., 1] = np.clip(rows + base[..., 1], 0.3, 4.7) - rows
        base[..., 1] += (np.floor(rows + base[..., 1]) == rows + base[..., 1]) * 0.25
        base[..., 0] = np.clip(cols + base[..., 0], 0.3, 5.7) - cols
        tau = jnp.asarray(base, jnp.float64)
        frac = np.concatenate([(rows + base[..., 1]) % 1.0, (cols + base[..., 0]) % 1.0])
        assert np.all((frac > 0.05) & (frac < 0.95))
        check_grads(jax.jit(deform), (x, tau), order=1, modes=("rev", "fwd"), eps=1e-4)


def test_gaussian_smoothing_is_self_adjoint_and_spatial_gradient_is_exact_on_ramps():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(1, 12, 12, 2)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(1, 12, 12, 2)), jnp.float32)
    lhs = float(jnp.sum(gaussian_smooth(a, 1.0) * b))
    rhs = float(jnp.sum(a * gaussian_smooth(b, 1.0)))
    assert abs(lhs - rhs) < 1e-4 * max(1.0, abs(lhs))
    ramp = (2.0 * jnp.arange(W, dtype=jnp.float32)[None, None, :, None] - jnp.arange(H, dtype=jnp.float32)[None, :, None, None])
    d_dx, d_dy = spatial_gradient(jnp.broadcast_to(ramp, (1, H, W, 1)))
    np.testing.assert_allclose(np.asarray(d_dx), 2.0)
    np.testing.assert_allclose(np.asarray(d_dy), -1.0)


# ------------------------------------------------------------------------------- ADef


def test_adef_fools_a_small_model_with_a_smooth_field():
    params = conv_params(channels=1)
    x = images01(8, channels=1)
    res = adef(conv_apply, params, x, max_iter=30, sigma=1.0, overshoot=1.2)
    pred = predictions(params, res.adversarial)
    y = predictions(params, x)
    success = np.asarray(res.success)
    assert success.mean() >= 0.9
    np.testing.assert_array_equal(success, pred != y)
    np.testing.assert_allclose(np.asarray(res.displacement), np.asarray(max_displacement(res.field)), rtol=1e-6)
    # The adversarial image is the ORIGINAL resampled along the returned field.
    np.testing.assert_allclose(np.asarray(res.adversarial), np.asarray(deform_jit(x, res.field)), atol=1e-6)
    assert np.all(np.asarray(res.adversarial) >= 0.0) and np.all(np.asarray(res.adversarial) <= 1.0)
    assert np.all(np.asarray(res.iterations)[success] >= 1)


def test_adef_targeted_reaches_the_target():
    params = conv_params(channels=1)
    x = images01(8, channels=1)
    y = predictions(params, x)
    t = (y + 1) % NUM_CLASSES
    res = adef(conv_apply, params, x, y, targeted=True, target=t, max_iter=50)
    ok = np.asarray(res.success)
    assert ok.mean() >= 0.5
    np.testing.assert_array_equal(np.asarray(res.pred)[ok], t[ok])


# ------------------------------------------------------------------------------- compile once, batching


def test_no_retracing_across_iterations_and_budgets():
    traces = {"n": 0}

    def counted_apply(params, x):
        traces["n"] += 1  # runs only while JAX traces
        return conv_apply(params, x)

    params = conv_params(channels=1)
    x = images01(4, channels=1)
    y = predictions(params, x)
    pgd(counted_apply, params, x, y, eps=0.05, steps=3)
    first = traces["n"]
    assert 0 < first <= 4  # initial/loop body/final: independent of the number of steps
    pgd(counted_apply, params, x, y, eps=0.2, steps=25, step_size=0.01)
    assert traces["n"] == first, "PGD retraced for a new eps/steps"
    traces["n"] = 0
    adef(counted_apply, params, x, y, max_iter=5)
    first = traces["n"]
    adef(counted_apply, params, x, y, max_iter=40, overshoot=1.1)
    assert traces["n"] == first, "ADef retraced for a new max_iter/overshoot"


@pytest.mark.parametrize("method", ["pgd", "adef"])
def test_batched_equals_per_image(method):
    params = conv_params(channels=1)
    x = images01(8, channels=1)
    y = predictions(params, x)

    def run(xb, yb):
        if method == "pgd":
            return pgd(conv_apply, params, xb, yb, eps=0.1, steps=10, random_start=False)
        return adef(conv_apply, params, xb, yb, max_iter=20)

    batched = run(x, y)
    for i in range(8):
        single = run(x[i:i + 1], y[i:i + 1])
        assert bool(single.success[0]) == bool(batched.success[i])
        assert int(single.iterations[0]) == int(batched.iterations[i])
        np.testing.assert_allclose(np.asarray(single.adversarial[0]), np.asarray(batched.adversarial[i]), atol=1e-5)


# ------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_rdfia_error():
    params = conv_params(channels=1)
    x = images01(3, channels=1)
    y = predictions(params, x)
    with pytest.raises(RdfiaError, match="eps"):
        pgd(conv_apply, params, x, y, eps=0.0)
    with pytest.raises(RdfiaError, match="eps"):
        fgsm(conv_apply, params, x, y, eps=-0.1)
    with pytest.raises(RdfiaError, match="unknown norm"):
        pgd(conv_apply, params, x, y, eps=0.1, norm="l1")
    with pytest.raises(RdfiaError, match="true class"):
        pgd(conv_apply, params, x, y, eps=0.1, targeted=True, target=y)
    with pytest.raises(RdfiaError, match="true class"):
        adef(conv_apply, params, x, y, targeted=True, target=int(y[0]))
    with pytest.raises(RdfiaError, match="target"):
        fgsm(conv_apply, params, x, y, eps=0.1, targeted=True)
    with pytest.raises(RdfiaError, match="valid pixel range"):
        pgd(conv_apply, params, x * 3.0, y, eps=0.1)
    with pytest.raises(RdfiaError, match="steps"):
        pgd(conv_apply, params, x, y, eps=0.1, steps=0)
    with pytest.raises(RdfiaError, match="overshoot"):
        adef(conv_apply, params, x, y, overshoot=0.5)


# ------------------------------------------------------------------------------- batched over a set


@pytest.mark.parametrize("method", ["fgsm", "pgd", "adef"])
def test_run_attack_batches_equal_the_old_loop_and_the_unbatched_result(method):
    """run_attack goes through map_batches (zero-padded last batch): the real rows equal the pre-merge
    loop (last batch padded by repeating its last image) exactly, and one unbatched call closely."""
    from rdfia_jax.attacks import evaluate

    params = conv_params(channels=1)
    x = np.asarray(images01(8, channels=1))
    y = predictions(params, x)
    opts = {"fgsm": {"eps": 0.1}, "pgd": {"eps": 0.1, "steps": 5, "random_start": False},
            "adef": {"max_iter": 10}}[method]
    fn = evaluate.attack_fn(method)
    got, _ = evaluate.run_attack(method, conv_apply, params, x, y, batch_size=3, **opts)
    old = {}
    for start in range(0, 8, 3):  # the loop run_attack had before map_batches
        xb, yb = x[start:start + 3], y[start:start + 3]
        k = xb.shape[0]
        xb = np.concatenate([xb, np.repeat(xb[-1:], 3 - k, axis=0)])
        yb = np.concatenate([yb, np.repeat(yb[-1:], 3 - k, axis=0)])
        for name, value in fn(conv_apply, params, xb, yb, **opts)._asdict().items():
            if value is not None:
                old.setdefault(name, []).append(np.asarray(value)[:k])
    assert set(got) == set(old)
    for name in got:
        np.testing.assert_array_equal(got[name], np.concatenate(old[name]), err_msg=name)
    whole = fn(conv_apply, params, x, y, **opts)
    np.testing.assert_array_equal(got["success"], np.asarray(whole.success))
    np.testing.assert_allclose(got["adversarial"], np.asarray(whole.adversarial), atol=1e-5)


def test_predict_batched_equals_unbatched():
    from rdfia_jax.attacks import evaluate

    params = conv_params(channels=1)
    x = np.asarray(images01(7, channels=1))
    np.testing.assert_array_equal(evaluate.predict(conv_apply, params, x, batch_size=3), predictions(params, x))
    assert evaluate.predict(conv_apply, params, x[:0]).shape == (0,)


# ------------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("name", ["torchvision", "caffe"])
def test_attack_command_normalizes_with_preprocessing(name):
    """The attack command now uses the network's Preprocessing (bit-identical to what predict, saliency
    and features feed the model); its former NumPy copy differed by at most 1 ulp (XLA divides by a
    broadcast std as a multiplication by its reciprocal)."""
    from rdfia_jax.commands.attack import _to_model, _to_pixels
    from rdfia_jax.preprocess import CAFFE

    pre = TORCHVISION if name == "torchvision" else CAFFE
    images01 = np.random.default_rng(3).integers(0, 256, (4, 6, 5, 3)).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(pre.mean, np.float32).reshape(1, 1, 1, -1)
    std = np.asarray(pre.std, np.float32).reshape(1, 1, 1, -1)
    x_old = (((images01[..., ::-1] if pre.bgr else images01) * np.float32(pre.scale) - mean) / std).astype(np.float32)
    back_old = (x_old * std + mean) / np.float32(pre.scale)
    back_old = back_old[..., ::-1] if pre.bgr else back_old
    x = _to_model(pre, images01)
    assert x.dtype == np.float32 and isinstance(x, np.ndarray)
    np.testing.assert_array_equal(x, np.asarray(pre.normalize(images01)))
    np.testing.assert_array_max_ulp(x, x_old, maxulp=1)
    np.testing.assert_array_equal(_to_pixels(pre, x), np.asarray(pre.denormalize(x)))
    np.testing.assert_allclose(_to_pixels(pre, x), back_old, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_to_pixels(pre, x), images01, rtol=0, atol=1e-6)


def test_figures_draw_without_touching_matplotlib_state(tmp_path):
    import sys

    import matplotlib
    from PIL import Image

    from rdfia_jax.attacks import figures

    backend = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    figures.plot_examples(tmp_path / "ex.png", x, np.clip(x + 0.1, 0, 1), [1, 2], [3, 4], [str(i) for i in range(5)],
                          fields=rng.normal(size=(2, 8, 8, 2)).astype(np.float32), title="t")
    figures.plot_robust_accuracy(tmp_path / "curve.png", {"eps": {"pgd": (np.array([0.0, 0.1]), np.array([1.0, 0.5]))}})
    for name in ("ex.png", "curve.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert matplotlib.get_backend() == backend
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules
