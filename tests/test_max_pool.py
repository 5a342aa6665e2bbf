"""max_pool as strided slices with a first-maximum VJP: values and gradients against lax.reduce_window
(the previous formulation), torch's max_pool2d backward, a NumPy reference on ties, check_grads,
and SqueezeNet / AlexNet saliency equal to the reduce_window formulation."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax import models
from rdfia_jax.models import imagenet_models
from rdfia_jax.models.layers import max_pool


def reduce_window_pool(x, window, stride, *, ceil_mode=False):
    """The previous formulation: lax.reduce_window, differentiated by JAX (select-and-scatter)."""
    _, h, w, _ = x.shape

    def out_size(n):
        if not ceil_mode:
            return (n - window) // stride + 1
        o = math.ceil((n - window) / stride) + 1
        return o - 1 if (o - 1) * stride >= n else o

    ph = max(0, (out_size(h) - 1) * stride + window - h)
    pw = max(0, (out_size(w) - 1) * stride + window - w)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                                 ((0, 0), (0, ph), (0, pw), (0, 0)))


def first_max_grad(x, g, k, s):
    """NumPy reference: each output's gradient to the first (row-major) maximum of its window."""
    dx = np.zeros_like(x)
    n, oh, ow, c = g.shape
    for b, i, j, ch in itertools.product(range(n), range(oh), range(ow), range(c)):
        win = x[b, i * s:i * s + k, j * s:j * s + k, ch]
        a, bb = np.unravel_index(np.argmax(win), win.shape)  # argmax: first occurrence
        dx[b, i * s + a, j * s + bb, ch] += g[b, i, j, ch]
    return dx


CASES = [((2, 13, 11, 3), 3, 2, True), ((1, 14, 14, 2), 3, 2, True), ((2, 12, 9, 2), 3, 2, False),
         ((1, 16, 10, 4), 2, 2, False), ((1, 27, 27, 5), 3, 2, True), ((1, 9, 9, 1), 3, 1, False)]


@pytest.mark.parametrize("shape,k,s,ceil", CASES)
def test_values_and_gradient_equal_reduce_window(shape, k, s, ceil):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    y, vjp = jax.vjp(lambda v: max_pool(v, k, s, ceil_mode=ceil), x)
    y_ref, vjp_ref = jax.vjp(lambda v: reduce_window_pool(v, k, s, ceil_mode=ceil), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape).astype(np.float32))
    np.testing.assert_allclose(np.asarray(vjp(g)[0]), np.asarray(vjp_ref(g)[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,k,s,ceil", CASES)
def test_ties_go_to_the_first_maximum(shape, k, s, ceil):
    # few distinct values: most windows hold ties (as after a ReLU)
    x = np.random.default_rng(2).integers(0, 3, size=shape).astype(np.float32)
    y, vjp = jax.vjp(lambda v: max_pool(v, k, s, ceil_mode=ceil), jnp.asarray(x))
    g = np.random.default_rng(3).normal(size=y.shape).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 4), (0, 4), (0, 0)), constant_values=-np.inf)  # ceil-mode windows
    ref = first_max_grad(xp, g, k, s)[:, :shape[1], :shape[2]]
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), ref, rtol=1e-6, atol=1e-6)


def test_gradient_matches_torch_with_ties():
    torch = pytest.importorskip("torch", reason="torch not installed: max_pool2d backward not compared")
    for (h, w), k, s, ceil in [((13, 13), 3, 2, True), ((112, 111), 3, 2, True), ((16, 16), 2, 2, False)]:
        x = np.random.default_rng(4).integers(0, 3, size=(2, 3, h, w)).astype(np.float32)
        t = torch.from_numpy(x).requires_grad_()
        out = torch.nn.functional.max_pool2d(t, k, s, ceil_mode=ceil)
        g = np.random.default_rng(5).normal(size=out.shape).astype(np.float32)
        out.backward(torch.from_numpy(g))
        y, vjp = jax.vjp(lambda v: max_pool(v, k, s, ceil_mode=ceil), jnp.asarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_array_equal(np.asarray(y), out.detach().numpy().transpose(0, 2, 3, 1))
        got = vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))[0]
        np.testing.assert_allclose(np.asarray(got), t.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_check_grads_float64_and_dtypes():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(6).normal(size=(1, 9, 8, 2)))
        for k, s, ceil in [(3, 2, True), (2, 2, False), (3, 1, False)]:
            check_grads(lambda v: max_pool(v, k, s, ceil_mode=ceil), (x,), order=2, modes=("rev",))
    xb = jnp.ones((1, 7, 7, 2), jnp.bfloat16)
    assert max_pool(xb, 3, 2, ceil_mode=True).dtype == jnp.bfloat16
    assert jax.grad(lambda v: max_pool(v, 3, 2, ceil_mode=True).sum())(xb).dtype == jnp.bfloat16


@pytest.mark.parametrize("name,size", [("squeezenet1_1", 33), ("alexnet", 63)])  # VGG16: 2x2 pools, in CASES
def test_saliency_equals_the_reduce_window_formulation(name, size, monkeypatch):
    module = models.create(name, width=1 / 8, num_classes=7, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(module)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, size, size, 3)).astype(np.float32))

    def saliency(v):
        g = jax.grad(lambda u: models.forward(graphdef, state, u)[0][:, 3].sum())(v)
        return jnp.max(jnp.abs(g), axis=-1)

    def both(v):
        return models.forward(graphdef, state, v)[0], saliency(v)

    logits, got = jax.jit(lambda v: both(v))(x)  # a fresh jit per formulation: traced with each max_pool
    monkeypatch.setattr(imagenet_models, "max_pool", reduce_window_pool)
    ref_logits, ref = jax.jit(lambda v: both(v))(x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(ref_logits))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-7)
