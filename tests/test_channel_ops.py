"""channel_ops: the CPU-friendly bias and BatchNorm layers equal their plain formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax.models import channel_ops


def _x(shape, seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def test_channel_sum_equals_reduction():
    x = _x((4, 5, 6, 7))
    np.testing.assert_allclose(channel_ops.channel_sum(x), jnp.sum(x, axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)


def test_add_channel_bias_value_and_gradients():
    x, b = _x((3, 4, 4, 5)), _x((5,), 1)
    np.testing.assert_array_equal(channel_ops.add_channel_bias(x, b), x + b[None, None, None])

    def loss(f, x, b):
        return jnp.sum(jnp.sin(f(x, b)))

    got = jax.grad(lambda x, b: loss(channel_ops.add_channel_bias, x, b), (0, 1))(x, b)
    want = jax.grad(lambda x, b: loss(lambda x, b: x + b[None, None, None], x, b), (0, 1))(x, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_add_channel_bias_check_grads_float64():
    with jax.enable_x64(True):
        x, b = _x((2, 3, 3, 4), dtype=jnp.float64), _x((4,), 1, jnp.float64)
        check_grads(lambda x, b: jnp.sin(channel_ops.add_channel_bias(x, b)), (x, b), order=2, modes=["rev"])


def _bn_reference(x, scale, bias, eps):
    mean = jnp.mean(x, axis=(0, 1, 2), keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=(0, 1, 2), keepdims=True)
    y = (x - mean) / jnp.sqrt(var + eps) * scale[None, None, None] + bias[None, None, None]
    return y, mean.reshape(-1), var.reshape(-1)


def test_batch_norm_train_matches_reference_values_and_gradients():
    x, scale, bias = _x((8, 4, 4, 6)) * 3.0 + 1.0, _x((6,), 1), _x((6,), 2)
    for got, want in zip(channel_ops.batch_norm_train(x, scale, bias, 1e-5), _bn_reference(x, scale, bias, 1e-5)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    w = _x((8, 4, 4, 6), 3)

    def loss(f, x, scale, bias):
        y, mean, var = f(x, scale, bias, 1e-5)
        # every output gets a cotangent, so the mean/var paths of the VJP are exercised too
        return jnp.sum(w * y) + jnp.sum(jnp.cos(mean)) + jnp.sum(jnp.sqrt(var))

    got = jax.grad(lambda *a: loss(channel_ops.batch_norm_train, *a), (0, 1, 2))(x, scale, bias)
    want = jax.grad(lambda *a: loss(_bn_reference, *a), (0, 1, 2))(x, scale, bias)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_batch_norm_train_check_grads_float64():
    with jax.enable_x64(True):
        x = _x((4, 3, 3, 5), dtype=jnp.float64)
        scale, bias = _x((5,), 1, jnp.float64), _x((5,), 2, jnp.float64)

        def f(x, scale, bias):
            y, mean, var = channel_ops.batch_norm_train(x, scale, bias, 1e-3)
            return jnp.sum(jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(var ** 2)

        check_grads(f, (x, scale, bias), order=2, modes=["rev"])


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_module_matches_nnx_batchnorm(train):
    kw = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False)
    ours, theirs = channel_ops.BatchNorm(6, rngs=nnx.Rngs(0), **kw), nnx.BatchNorm(6, rngs=nnx.Rngs(0), **kw)
    for m in (ours, theirs):  # non-trivial affine parameters and running statistics
        m.scale[...] = _x((6,), 1)
        m.bias[...] = _x((6,), 2)
        m.mean[...] = _x((6,), 3)
        m.var[...] = jnp.abs(_x((6,), 4)) + 0.5
    x = _x((8, 4, 4, 6), 5) * 2.0
    np.testing.assert_allclose(ours(x, use_running_average=not train), theirs(x, use_running_average=not train),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.mean[...], theirs.mean[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.var[...], theirs.var[...], rtol=1e-5, atol=1e-6)

    def grads(m):
        graphdef, params, rest = nnx.split(m, nnx.Param, ...)

        def loss(params, rest):
            y = nnx.merge(graphdef, params, rest, copy=True)(x, use_running_average=not train)
            return jnp.sum(jnp.tanh(y))

        return jax.grad(loss)(params, rest)

    for g, w in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(theirs))):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding,strides", [(((2, 2), (2, 2)), 1), (1, 2), ("SAME", 1)])
def test_conv_module_matches_nnx_conv(padding, strides):
    ours = channel_ops.Conv(3, 8, (5, 5), padding=padding, strides=strides, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(3, 8, (5, 5), padding=padding, strides=strides, rngs=nnx.Rngs(0))
    ours.bias[...] = _x((8,), 7)
    theirs.bias[...] = _x((8,), 7)
    x = _x((2, 12, 12, 3))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)

    def grads(m):
        graphdef, params = nnx.split(m)
        return jax.grad(lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x))))(params)

    for g, w in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(theirs))):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
