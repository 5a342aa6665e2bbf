"""Visualization methods: analytic checks on tiny models, gradient checks, no retracing, bad input."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax import models
from rdfia_jax.errors import RdfiaError
from rdfia_jax.models import Network
from rdfia_jax.models.small import SmallCNN
from rdfia_jax.classifier import UnitPreprocessing
from rdfia_jax.vis import classvis as C
from rdfia_jax.vis import core
from rdfia_jax.vis import fooling as F
from rdfia_jax.vis import saliency as S

UNIT2 = UnitPreprocessing("unit", (0.0, 0.0), (1.0, 1.0), 1.0, False)


class LinearNet(nnx.Module):
    """logits = flatten(x) @ W + b, on 8x8x2 inputs (the model contract, no layers)."""

    name = "linear"
    image_size = 8
    in_channels = 2
    activation_names = ("logits",)

    def __init__(self, rngs, num_classes=5):
        self.fc = nnx.Linear(8 * 8 * 2, num_classes, rngs=rngs)

    def __call__(self, x, capture=(), dropout_key=None):
        logits = self.fc(x.reshape(x.shape[0], -1))
        return logits, ({"logits": logits} if "logits" in tuple(capture) else {})


class TinyConvNet(nnx.Module):
    """A smooth (tanh) conv net on 8x8x2 inputs with named layers and a perturb hook."""

    name = "tiny"
    image_size = 8
    in_channels = 2
    activation_names = ("conv", "act", "logits")

    def __init__(self, rngs, num_classes=4):
        self.conv = nnx.Conv(2, 3, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(8 * 8 * 3, num_classes, rngs=rngs)

    def __call__(self, x, capture=(), dropout_key=None, perturb=None):
        perturb = perturb or {}
        acts = {}

        def tap(name, v):
            v = v + perturb[name] if name in perturb else v
            if name in tuple(capture):
                acts[name] = v
            return v

        h = tap("act", jnp.tanh(tap("conv", self.conv(x))))
        return tap("logits", self.fc(h.reshape(h.shape[0], -1))), acts


def _net(module, name):
    graphdef, state = nnx.split(module)
    return Network(name, graphdef, state, UNIT2, "test")


@pytest.fixture(scope="module")
def linear():
    return _net(LinearNet(nnx.Rngs(0)), "linear")


@pytest.fixture(scope="module")
def tiny():
    return _net(TinyConvNet(nnx.Rngs(1)), "tiny")


def _images(n, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 2), jnp.float32)


def test_linear_saliency_is_abs_weight(linear):
    x = _images(3)
    targets = np.array([0, 3, 4])
    maps = S.saliency(linear, x, targets)
    kernel = np.asarray(linear.state["fc"]["kernel"][...])  # (128, 5), input in H, W, C order
    expected = np.abs(kernel[:, targets].T.reshape(3, 8, 8, 2)).max(axis=-1)
    np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-6, atol=1e-7)


def test_integrated_gradients_completeness_improves_with_steps(tiny):
    x = _images(4)
    targets = np.array([0, 1, 2, 3])
    logits_x = np.asarray(tiny.logits(x))[np.arange(4), targets]
    logits_b = np.asarray(tiny.logits(jnp.zeros_like(x)))[np.arange(4), targets]
    errors = []
    for steps in (2, 8, 64):
        attr = S.integrated_gradients(tiny, x, targets, steps=steps, baseline="zeros")
        errors.append(np.abs(np.asarray(attr).sum(axis=(1, 2, 3)) - (logits_x - logits_b)).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3 * max(1.0, np.abs(logits_x - logits_b).max())


def test_fooling_step_zero_gradient_no_nan():
    dead = LinearNet(nnx.Rngs(0))
    dead.fc.kernel[...] = jnp.zeros_like(dead.fc.kernel[...])  # scores independent of x: gradient exactly 0
    net = _net(dead, "linear")
    x = _images(2)
    new_x, done = F.fooling_step(net.graphdef, net.state, x, jnp.array([1, 2], jnp.int32),
                                 jnp.zeros((2,), bool), jnp.float32(1.0), jnp.float32(1e-12))
    assert np.isfinite(np.asarray(new_x)).all()
    np.testing.assert_array_equal(np.asarray(new_x), np.asarray(x))
    res = F.fool(net, x, [1, 2], max_iters=5)
    assert np.isfinite(res.images).all() and np.isfinite(res.l2).all()
    assert res.iterations.tolist() == [5, 5] or res.success.any()


def test_fooling_reaches_target_and_stops_per_image(tiny):
    x = _images(4, seed=3)
    pred = np.asarray(jnp.argmax(tiny.logits(x), -1))
    targets = (pred + 1) % 4
    targets[0] = pred[0]  # already the target: 0 iterations, unchanged
    res = F.fool(tiny, x, targets, lr=0.5, max_iters=200)
    assert res.success.all()
    assert res.iterations[0] == 0 and res.l2[0] == 0.0
    assert (res.iterations[1:] > 0).all()
    np.testing.assert_array_equal(res.predictions, targets)


def test_classvis_objective_and_blur_gradients_float64(tiny):
    with jax.enable_x64(True):
        state64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tiny.state)
        x = jax.random.normal(jax.random.key(0), (2, 8, 8, 2), jnp.float64)
        targets = jnp.array([1, 2], jnp.int32)
        for objective in (C.Objective(), C.Objective("channel", "act"), C.Objective("neuron", "conv", (2, 3))):
            fn = lambda xx, o=objective: C.regularized_objective(tiny.graphdef, state64, xx, targets, o, 1e-3)[0]  # noqa: E731
            check_grads(fn, (x,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
        check_grads(lambda xx: C.gaussian_blur(xx, 0.5), (x,), order=1, modes=("fwd", "rev"), atol=1e-7, rtol=1e-7)
        check_grads(lambda xx: C.gaussian_blur(xx, 1.3), (x,), order=1, modes=("rev",), atol=1e-7, rtol=1e-7)


def test_blur_matches_scipy_and_jitter_undoes():
    from scipy.ndimage import gaussian_filter1d

    x = np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype(np.float32)
    for sigma in (0.5, 1.0):
        ref = gaussian_filter1d(gaussian_filter1d(x, sigma, axis=1), sigma, axis=2)
        np.testing.assert_allclose(np.asarray(C.gaussian_blur(jnp.asarray(x), sigma)), ref, atol=1e-5)
    y = C.jitter(jnp.asarray(x), 3, 5)
    np.testing.assert_array_equal(np.asarray(y[:, 5, 3]), x[:, 0, 0])
    np.testing.assert_array_equal(np.asarray(C.jitter(y, -3, -5)), x)


def test_traced_once_per_shape(tiny):
    before = dict(core.TRACES.counts)
    for seed in (0, 1, 2):
        x = _images(3, seed)
        S.saliency(tiny, x, [0, 1, 2])
        F.fool(tiny, x, [1, 2, 3], max_iters=3 + seed, lr=0.1 * (seed + 1))
        for engine in ("lax", "python"):
            C.class_visualization(tiny, [0, 1, 2], init=x, iters=12, max_jitter=2, snapshot_every=4, lr=1.0 + seed,
                                  l2_reg=1e-3 * (seed + 1), seed=seed, engine=engine)
        S.gradcam(tiny, x, [0, 1, 2], layer="act")
    for name in ("saliency", "fool", "classvis", "classvis_step", "gradcam"):
        assert core.TRACES[name] - before.get(name, 0) == 1, name
    S.saliency(tiny, _images(5), [0, 1, 2, 3, 0])  # a new shape compiles once more
    assert core.TRACES["saliency"] - before.get("saliency", 0) == 2


def test_gradcam_matches_manual_computation(tiny):
    x = _images(2)
    targets = jnp.array([1, 3], jnp.int32)
    cam = np.asarray(S.gradcam(tiny, x, targets, layer="act"))
    module = nnx.merge(tiny.graphdef, tiny.state)
    h = jnp.tanh(module.conv(x))
    grads = jax.grad(lambda hh: jnp.sum(core.class_scores(module.fc(hh.reshape(2, -1)), targets)))(h)
    manual = jax.nn.relu(jnp.sum(jnp.mean(grads, axis=(1, 2), keepdims=True) * h, axis=-1))
    manual = np.asarray(manual / jnp.max(manual, axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(cam, manual, rtol=1e-5, atol=1e-6)


def test_classvis_snapshots_clamp_and_channel_objective(tiny):
    res = C.class_visualization(tiny, [2, 0], iters=20, lr=2.0, max_jitter=2, snapshot_every=5, engine="lax")
    stepped = C.class_visualization(tiny, [2, 0], iters=20, lr=2.0, max_jitter=2, snapshot_every=5, engine="python")
    np.testing.assert_allclose(stepped.snapshots, res.snapshots, rtol=1e-5, atol=1e-5)  # same iterates
    assert res.snapshots.shape == (4, 2, 8, 8, 2) and res.snapshot_iters.tolist() == [5, 10, 15, 20]
    np.testing.assert_array_equal(res.snapshots[-1], res.images)
    assert res.images.min() >= 0.0 and res.images.max() <= 1.0
    x0 = jnp.asarray(res.initial)
    assert float(res.objective_values[0]) > float(C.objective_values(tiny.graphdef, tiny.state, x0[:1],
                                                                    jnp.array([2], jnp.int32), C.Objective())[0][0])
    feat = C.class_visualization(tiny, 1, n=1, objective=C.Objective("channel", "conv"), iters=10, max_jitter=0)
    assert np.isfinite(feat.images).all() and feat.probabilities is None


def test_randomization_check_and_smoothgrad(tiny):
    x = _images(3)
    result = S.randomization_check(tiny, "saliency", x, [0, 1, 2])
    assert result["spearman"].shape == (3,) and result["mean_spearman"] < 0.9
    sg = S.smoothgrad(tiny, x, [0, 1, 2], n_samples=4)
    assert sg.shape == (3, 8, 8) and np.isfinite(np.asarray(sg)).all()
    np.testing.assert_allclose(S.spearman(np.arange(10.0)[None], np.arange(10.0)[None] ** 3), [1.0])


def _numpy_init(abstract_module, seed=0):
    """Random He-scaled weights drawn with numpy: no per-layer XLA compilations (eager nnx init of a
    SqueezeNet compiles ~40 small programs, which is slow on a loaded CPU)."""
    graphdef, state = nnx.split(abstract_module)
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if len(s.shape) > 1 else 0.01
        return jnp.asarray(rng.normal(0.0, scale, s.shape).astype(np.float32))

    return graphdef, jax.tree_util.tree_map(draw, state)


@pytest.fixture(scope="module")
def squeeze():
    graphdef, state = _numpy_init(models.abstract("squeezenet1_1", width=1 / 16, num_classes=10))
    return Network("squeezenet1_1", graphdef, state)


def test_bad_input(tiny, squeeze):
    with pytest.raises(RdfiaError, match="unknown ImageNet class"):
        core.resolve_class(squeeze, "not a class name")
    with pytest.raises(RdfiaError, match="out of range"):
        core.resolve_class(squeeze, "1000")
    with pytest.raises(RdfiaError, match="out of range 0..9"):  # this narrow test model has 10 outputs
        S.saliency(squeeze, jnp.zeros((1, 32, 32, 3)), [366])
    with pytest.raises(RdfiaError, match="out of range"):
        core.resolve_class(Network("mnist-small", *_numpy_init(nnx.eval_shape(lambda: SmallCNN(rngs=nnx.Rngs(0))))), 10)
    assert core.resolve_class(squeeze, "gorilla") == 366
    with pytest.raises(RdfiaError, match="out of range"):
        S.saliency(tiny, _images(2), [0, 4])
    with pytest.raises(RdfiaError, match=r"8x8"):
        S.saliency(tiny, jnp.zeros((1, 9, 9, 2)), [0])
    with pytest.raises(RdfiaError, match=r"\(N, H, W, 3\)"):
        S.saliency(squeeze, jnp.zeros((1, 64, 64, 1)), [0])
    with pytest.raises(RdfiaError, match="float"):
        S.saliency(squeeze, jnp.zeros((1, 64, 64, 3), jnp.uint8), [0])
    with pytest.raises(RdfiaError, match="no layer 'conv5_3'"):
        S.gradcam(squeeze, jnp.zeros((1, 64, 64, 3)), [0], layer="conv5_3")
    with pytest.raises(RdfiaError, match="no layer 'nope'"):
        C.class_visualization(tiny, 0, objective=C.Objective("channel", "nope"), iters=2)
    with pytest.raises(RdfiaError, match="out of range"):
        C.class_visualization(tiny, 7, objective=C.Objective("channel", "conv"), iters=2)
    with pytest.raises(RdfiaError, match="unknown objective"):
        C.class_visualization(tiny, 0, objective=C.Objective("bogus"), iters=2)


@pytest.mark.slow
def test_imagenet_model_paths_run(squeeze):
    """Saliency, Grad-CAM (fire9; pool5 through the models' perturb hook) and the class-visualization loop on a
    narrow random SqueezeNet (the same code as for the full-size models)."""
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3), jnp.float32)
    assert S.saliency(squeeze, x, [1, 2]).shape == (2, 32, 32)
    cam = S.gradcam(squeeze, x, [1, 2])
    assert cam.shape == (2, 32, 32) and np.isfinite(np.asarray(cam)).all()
    if "perturb" in inspect.signature(models.forward).parameters:  # any named layer via the hook
        assert np.isfinite(np.asarray(S.gradcam(squeeze, x, [1, 2], layer="pool5"))).all()
    cv = C.class_visualization(squeeze, [5], iters=2, image_size=32, snapshot_every=0, max_jitter=4)
    lo, hi = squeeze.preprocessing.bounds()
    assert (cv.images >= lo - 1e-6).all() and (cv.images <= hi + 1e-6).all()


def test_figures_change_no_process_state(tmp_path):
    """Figures are drawn on their own Agg canvases: no matplotlib.use, no pyplot figures left open."""
    import sys

    import matplotlib

    from rdfia_jax.transfer import report
    from rdfia_jax.vis import figures

    backend = matplotlib.rcParams["backend"]
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    figures.attribution_grid(images, {"saliency": images[..., 0]}, ["a", "b"], tmp_path / "a.png", suptitle="t")
    figures.image_grid(list(images), ["a", "b"], tmp_path / "b.png", cols=2)
    report.plot_c_sweep({1.0: 0.5, 10.0: 0.6}, {1.0: 0.4, 10.0: 0.7}, tmp_path / "c.png", best_C=10.0)
    assert matplotlib.rcParams["backend"] == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
