"""ImageNet models: parameter counts, activation shapes at any size, torch-exact pooling, gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax import models
from rdfia_jax.errors import RdfiaError
from rdfia_jax.inspect import summary
from rdfia_jax.models.layers import adaptive_avg_pool, max_pool


@pytest.mark.parametrize("name,total", [("vgg16", 138_357_544), ("alexnet", 61_100_840),
                                        ("squeezenet1_1", 1_235_496)])
def test_parameter_totals(name, total):
    rows, computed = summary(name)
    assert computed == total
    assert sum(r.params for r in rows) == total


def test_vgg16_layer_counts_match_report_figure1():
    rows = {r.layer: r.params for r in summary("vgg16")[0]}
    assert rows["conv1_1"] == 1792 and rows["conv5_3"] == 2_359_808
    assert rows["fc6"] == 102_764_544 and rows["fc7"] == 16_781_312 and rows["fc8"] == 4_097_000
    assert sum(v for k, v in rows.items() if k.startswith("conv")) == 14_714_688


def _shapes(name, size):
    rows, _ = summary(name, size)
    return {r.layer: r.output_shape[1:] for r in rows}


@pytest.mark.parametrize("size,expect", [
    (224, {"pool1": (112, 112, 64), "pool5": (7, 7, 512), "avgpool": (7, 7, 512), "relu7": (4096,)}),
    (225, {"pool1": (112, 112, 64), "pool4": (14, 14, 512), "pool5": (7, 7, 512), "fc8": (1000,)}),
    (64, {"pool5": (2, 2, 512), "avgpool": (7, 7, 512), "fc6": (4096,)}),
])
def test_vgg16_activation_shapes(size, expect):
    shapes = _shapes("vgg16", size)
    assert len(shapes) == 13 * 2 + 5 + 6
    for k, v in expect.items():
        assert shapes[k] == v, k


@pytest.mark.parametrize("size,expect", [
    (224, {"conv1": (55, 55, 64), "pool1": (27, 27, 64), "pool5": (6, 6, 256), "avgpool": (6, 6, 256)}),
    (225, {"conv1": (55, 55, 64), "pool2": (13, 13, 192), "fc7": (4096,)}),
    (64, {"conv1": (15, 15, 64), "pool1": (7, 7, 64), "pool5": (1, 1, 256), "avgpool": (6, 6, 256)}),
])
def test_alexnet_activation_shapes(size, expect):
    shapes = _shapes("alexnet", size)
    for k, v in expect.items():
        assert shapes[k] == v, k


@pytest.mark.parametrize("size,expect", [
    # ceil-mode pools: 111 -> 55 -> 27 -> 13 at 224; at 225 (conv1 112) ceil gives 56, floor would give 55
    (224, {"conv1": (111, 111, 64), "pool1": (55, 55, 64), "pool3": (27, 27, 128), "pool5": (13, 13, 256),
           "fire9": (13, 13, 512), "conv10": (13, 13, 1000), "avgpool": (1, 1, 1000)}),
    (225, {"conv1": (112, 112, 64), "pool1": (56, 56, 64), "pool3": (28, 28, 128), "pool5": (14, 14, 256)}),
    (64, {"conv1": (31, 31, 64), "pool1": (15, 15, 64), "pool3": (7, 7, 128), "pool5": (3, 3, 256)}),
])
def test_squeezenet_activation_shapes(size, expect):
    shapes = _shapes("squeezenet1_1", size)
    for k, v in expect.items():
        assert shapes[k] == v, k


# --- torch-exact pooling, against loop references written from ATen's definitions -----------------

def _ref_adaptive(x, oh, ow):
    n, h, w, c = x.shape
    out = np.zeros((n, oh, ow, c), np.float64)
    for i, j in itertools.product(range(oh), range(ow)):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
        out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def _ref_maxpool(x, k, s, ceil):
    n, h, w, c = x.shape

    def osz(L):
        if not ceil:
            return (L - k) // s + 1
        o = -(-(L - k) // s) + 1
        return o - 1 if (o - 1) * s >= L else o
    oh, ow = osz(h), osz(w)
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i, j in itertools.product(range(oh), range(ow)):
        out[:, i, j] = x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("hw,o", [((7, 7), (7, 7)), ((14, 14), (7, 7)), ((13, 10), (7, 7)), ((2, 3), (7, 7)),
                                  ((13, 13), (6, 6)), ((5, 9), (1, 1))])
def test_adaptive_avg_pool_matches_aten(hw, o):
    x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool(jnp.asarray(x), o)), _ref_adaptive(x, *o),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,ceil", [(111, True), (112, True), (55, True), (28, True), (14, True),
                                       (13, True), (112, False), (224, False)])
def test_max_pool_matches_aten(size, ceil):
    x = np.random.default_rng(1).normal(size=(1, size, size + 1, 2)).astype(np.float32)
    k, s = (3, 2) if ceil or size != 224 else (2, 2)
    np.testing.assert_array_equal(np.asarray(max_pool(jnp.asarray(x), k, s, ceil_mode=ceil)),
                                  _ref_maxpool(x, k, s, ceil))


def test_pooling_matches_torch_when_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for h, w in [(13, 13), (112, 111), (6, 7)]:
        x = rng.normal(size=(2, 4, h, w)).astype(np.float32)
        t = torch.from_numpy(x)
        ref = torch.nn.functional.max_pool2d(t, 3, 2, ceil_mode=True).numpy().transpose(0, 2, 3, 1)
        got = max_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), 3, 2, ceil_mode=True)
        np.testing.assert_array_equal(np.asarray(got), ref)
        ref = torch.nn.functional.adaptive_avg_pool2d(t, (7, 7)).numpy().transpose(0, 2, 3, 1)
        got = adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), (7, 7))
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


# --- gradients (float64 finite differences) --------------------------------------------------------

def test_check_grads_pooling_blocks():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 13, 11, 2)))
        check_grads(lambda v: adaptive_avg_pool(v, (7, 7)), (x,), order=2, modes=("fwd", "rev"))
        # random inputs have no ties, so max-pool is differentiable at x
        check_grads(lambda v: max_pool(v, 3, 2, ceil_mode=True), (x,), order=1, modes=("rev",))


def test_check_grads_fire_module():
    with jax.enable_x64(True):
        fire = models.Fire(4, 2, 3, 3, rngs=nnx.Rngs(0), dtype=jnp.float64)
        graphdef, state = nnx.split(fire)
        # random (non-zero) biases: with zero biases, a position whose squeeze output is all zero puts
        # the expand ReLUs exactly on their kink, where finite differences see half the slope
        rng = np.random.default_rng(8)
        state = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.3, jnp.float64), state)
        x = jnp.asarray(np.random.default_rng(4).normal(size=(1, 5, 5, 4)))
        f = lambda s, v: nnx.merge(graphdef, s)(v)  # noqa: E731
        check_grads(lambda v: f(state, v), (x,), order=1, modes=("rev",), eps=1e-6)
        check_grads(lambda s: f(s, x), (state,), order=1, modes=("rev",), eps=1e-6)


@pytest.mark.parametrize("name,size", [("vgg16", 32), ("alexnet", 63), ("squeezenet1_1", 33)])
def test_check_grads_input_gradient_reduced_width(name, size):
    with jax.enable_x64(True):
        module = models.create(name, width=1 / 16, num_classes=5, dtype=jnp.float64)
        graphdef, state = nnx.split(module)
        # non-zero biases keep units off their ReLU kink where a whole receptive field is zero
        rng = np.random.default_rng(9)
        state = jax.tree_util.tree_map_with_path(
            lambda p, a: jnp.asarray(a, jnp.float64) if "kernel" in jax.tree_util.keystr(p)
            else jnp.asarray(rng.normal(size=a.shape) * 0.05, jnp.float64), state)
        x = jnp.asarray(np.random.default_rng(5).normal(size=(1, size, size, 3)))
        score = lambda v: models.forward(graphdef, state, v)[0][:, 2].sum()  # noqa: E731
        # a small step keeps finite differences from crossing a ReLU kink
        check_grads(score, (x,), order=1, modes=("rev",), eps=1e-6)


# --- the contract and bad input --------------------------------------------------------------------

def test_capture_returns_exactly_requested_layers():
    module = models.create("squeezenet1_1", width=1 / 8)
    logits, acts = module(jnp.zeros((2, 64, 64, 3)), capture=("fire2", "pool5"))
    assert set(acts) == {"fire2", "pool5"} and logits.shape == (2, 1000)


def test_network_features_fn_equals_forward_capture():
    net = models.Network.from_module("vgg16", models.create("vgg16", width=1 / 16))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 40, 40, 3)), jnp.float32)
    feats = net.features_fn("relu6")(net.state, x)
    _, acts = models.forward(net.graphdef, net.state, x, ("relu6",))
    np.testing.assert_allclose(np.asarray(feats), np.asarray(acts["relu6"]), rtol=1e-6)


def test_dropout_only_with_key():
    module = models.create("alexnet", width=1 / 16)
    x = jnp.ones((1, 63, 63, 3))
    a, _ = module(x)
    b, _ = module(x)
    c, _ = module(x, dropout_key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_unknown_model_and_layer_errors():
    with pytest.raises(RdfiaError, match="unknown model 'resnet50'"):
        models.create("resnet50")
    module = models.create("squeezenet1_1", width=1 / 8)
    with pytest.raises(RdfiaError, match="unknown layer 'relu7'.*squeezenet1_1"):
        module(jnp.zeros((1, 64, 64, 3)), capture=("relu7",))


def test_bad_input_shape_errors():
    module = models.create("squeezenet1_1", width=1 / 8)
    with pytest.raises(RdfiaError, match=r"\(N, H, W, 3\)"):
        module(jnp.zeros((1, 3, 64, 64)))
    with pytest.raises(RdfiaError, match="at least 17x17"):
        module(jnp.zeros((1, 8, 8, 3)))


def test_perturb_gives_gradient_wrt_named_activation():
    """d logit / d perturb[layer] at zero == d logit / d activation (checked by the chain rule on the tail)."""
    module = models.create("squeezenet1_1", width=1 / 8, num_classes=4)
    graphdef, state = nnx.split(module)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(1, 40, 40, 3)), jnp.float32)
    _, acts = models.forward(graphdef, state, x, ("relu10",))
    zero = jnp.zeros_like(acts["relu10"])
    g = jax.grad(lambda p: models.forward(graphdef, state, x, perturb={"relu10": p})[0][0, 1])(zero)
    # after relu10 only the global average pool remains: the gradient is 1/(H*W) on channel 1
    hw = acts["relu10"].shape[1] * acts["relu10"].shape[2]
    want = np.zeros(acts["relu10"].shape, np.float32)
    want[..., 1] = 1.0 / hw
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6)
    with pytest.raises(RdfiaError, match="unknown layer 'nope'"):
        models.forward(graphdef, state, x, perturb={"nope": zero})


@pytest.mark.parametrize("chunk", [1, 2, 3, None])
def test_forward_chunked_equals_forward(chunk):
    graphdef, state = nnx.split(models.create("vgg16", width=1 / 16, num_classes=7))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 40, 40, 3)), jnp.float32)
    capture = ("conv1_1", "pool3", "fc7")
    logits, acts = models.forward(graphdef, state, x, capture)
    c_logits, c_acts = jax.jit(lambda s, v: models.forward_chunked(graphdef, s, v, capture, chunk=chunk))(state, x)
    np.testing.assert_allclose(c_logits, logits, rtol=1e-5, atol=1e-5)  # chunk 3 does not divide 4: one pass
    assert set(c_acts) == set(acts)
    for name in capture:
        assert c_acts[name].shape == acts[name].shape
        np.testing.assert_allclose(c_acts[name], acts[name], rtol=1e-5, atol=1e-5)


def test_cpu_policy():
    assert jax.default_backend() == "cpu"
    assert not models.cpu_tuned_kernels("vgg16") and not models.cpu_tuned_kernels("VGG16")
    assert models.cpu_tuned_kernels("alexnet") and models.cpu_tuned_kernels("squeezenet1_1")
