"""GAN section: architectures, the stride-1 reformulations, gradients, the training step, resume, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax import xla
from rdfia_jax.errors import RdfiaError
from rdfia_jax.gan import models, ops, score, steps, sweeps
from rdfia_jax.train import checkpoint, loop


# ----------------------------------------------------------------------------- architectures
def test_parameter_counts_and_shapes():
    # abstract init and forward (no compute): exact counts and shapes of the full-size networks
    g, d = nnx.eval_shape(lambda: models.Generator(rngs=nnx.Rngs(0))), nnx.eval_shape(lambda: models.Discriminator(rngs=nnx.Rngs(0)))
    cg = nnx.eval_shape(lambda: models.CondGenerator(rngs=nnx.Rngs(0)))
    cd = nnx.eval_shape(lambda: models.CondDiscriminator(rngs=nnx.Rngs(0)))
    assert [models.count_params(m) for m in (g, d, cg, cd)] == [369_600, 166_848, 3_075_840, 2_642_433]
    z = jax.ShapeDtypeStruct((2, 100), jnp.float32)
    y = jax.ShapeDtypeStruct((2, 10), jnp.float32)
    img = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)

    def shape_of(module, *args):
        graphdef, state = nnx.split(module)
        return jax.eval_shape(lambda st, *a: nnx.merge(graphdef, st)(*a, train=True), state, *args).shape

    assert shape_of(g, z) == (2, 32, 32, 1) and shape_of(cg, z, y) == (2, 32, 32, 1)
    assert shape_of(d, img) == (2,) and shape_of(cd, img, y) == (2,)
    # N(0, 0.02) conv init, BN scale N(1, 0.02), BN bias 0; tanh output range
    small = models.Generator(nz=4, ngf=8, rngs=nnx.Rngs(0))
    assert abs(float(jnp.std(small.w1[...])) - 0.02) < 0.002
    assert abs(float(jnp.mean(small.bn1.scale[...])) - 1.0) < 0.01 and float(jnp.std(small.bn1.scale[...])) < 0.04
    assert float(jnp.abs(small.bn1.bias[...]).max()) == 0.0
    assert float(jnp.abs(small(jnp.ones((2, 4), jnp.float32) * 30, train=False)).max()) <= 1.0


def test_bad_sizes_raise():
    with pytest.raises(RdfiaError, match="nz"):
        steps.GanConfig(nz=0)
    with pytest.raises(RdfiaError, match="nz"):
        models.Generator(nz=-3, rngs=nnx.Rngs(0))
    with pytest.raises(RdfiaError, match="kind"):
        steps.GanConfig(kind="wgan")
    with pytest.raises(RdfiaError, match="lr-d"):
        steps.GanConfig(lr_d=0.0)
    with pytest.raises(RdfiaError, match="unknown sweep"):
        sweeps.sweep_runs("nz5")


def test_variants_sweep_is_the_report_sweep_without_the_default_run():
    report, variants = sweeps.sweep_runs("report"), sweeps.sweep_runs("variants")
    assert report[0] == ("default", {}) and variants == report[1:]
    assert all(changes for _, changes in variants)  # each one differs from the default configuration


# ----------------------------------------------------------------------------- reformulations
def _torch_conv_transpose(x, w, stride, padding):
    """PyTorch ConvTranspose2d by its definition (scatter), numpy float64; w (k, k, in, out)."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    full = np.zeros((n, (h - 1) * stride + k, (wd - 1) * stride + k, w.shape[3]))
    for i in range(h):
        for j in range(wd):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("nc,hwco->nhwo", x[:, i, j], w)
    return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]


def _torch_conv(x, w, stride, padding):
    """PyTorch Conv2d (cross-correlation) by its definition, numpy float64."""
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    k = w.shape[0]
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = np.einsum("nhwc,hwco->no", xp[:, i * stride:i * stride + k, j * stride:j * stride + k], w)
    return out


@pytest.mark.parametrize("impl", ["phase", "phase4", "adjoint", "gemm", "auto"])
def test_transposed_conv_reformulation_equals_definition_and_lax(impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3))
    w = rng.normal(size=(4, 4, 3, 16))
    expected = _torch_conv_transpose(x, w, 2, 1)
    with jax.enable_x64(True):
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        np.testing.assert_allclose(np.asarray(ops.conv_transpose_reference(xj, wj, 2, 1)), expected, atol=1e-12)
        conv_t = functools.partial(ops.conv_transpose_4x4_s2, impl=impl)
        out = conv_t(xj, wj)
        np.testing.assert_allclose(np.asarray(out), expected, atol=1e-12)
        # gradients (input and kernel) equal those of lax.conv_transpose
        cot = jnp.asarray(rng.normal(size=expected.shape))
        g_new = jax.grad(lambda a, b: jnp.sum(conv_t(a, b) * cot), argnums=(0, 1))(xj, wj)
        g_ref = jax.grad(lambda a, b: jnp.sum(ops.conv_transpose_reference(a, b, 2, 1) * cot), argnums=(0, 1))(xj, wj)
        for a, b in zip(g_new, g_ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)
        if impl in ("phase4", "adjoint"):  # hand-written VJPs: also against finite differences
            check_grads(conv_t, (xj, wj), order=1, modes=["rev"])


@pytest.mark.parametrize("impl", ["matmul1", "auto"])
def test_one_channel_ends_equal_definition_lax_and_their_gradients(impl):
    """The generators' last layer (to 1 channel) and the discriminators' image convolution (from 1
    channel) as matrix products with hand-written VJPs: values and both gradients equal lax's."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        cases = [
            (functools.partial(ops.conv_transpose_4x4_s2, impl=impl), lambda a, b: ops.conv_transpose_reference(a, b, 2, 1),
             rng.normal(size=(2, 5, 6, 3)), rng.normal(size=(4, 4, 3, 1)), _torch_conv_transpose),
            (functools.partial(ops.conv_4x4_s2, impl=impl), lambda a, b: ops.conv_reference(a, b, 2, 1),
             rng.normal(size=(2, 8, 10, 1)), rng.normal(size=(4, 4, 1, 5)), _torch_conv),
        ]
        for fast, reference, x, w, definition in cases:
            xj, wj = jnp.asarray(x), jnp.asarray(w)
            out = fast(xj, wj)
            np.testing.assert_allclose(np.asarray(out), definition(x, w, 2, 1), atol=1e-12)
            cot = jnp.asarray(rng.normal(size=out.shape))
            g_new = jax.grad(lambda a, b: jnp.sum(fast(a, b) * cot), argnums=(0, 1))(xj, wj)
            g_ref = jax.grad(lambda a, b: jnp.sum(reference(a, b) * cot), argnums=(0, 1))(xj, wj)
            for a, b in zip(g_new, g_ref):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)
            check_grads(fast, (xj, wj), order=1, modes=["rev"])
        # the one-channel forms refuse what they do not cover instead of computing something else
        if impl == "matmul1":
            with pytest.raises(ValueError, match="one output channel"):
                ops.conv_transpose_4x4_s2(jnp.zeros((1, 2, 2, 3)), jnp.zeros((4, 4, 3, 2)), impl="matmul1")
            with pytest.raises(ValueError, match="one input channel"):
                ops.conv_4x4_s2(jnp.zeros((1, 4, 4, 2)), jnp.zeros((4, 4, 2, 3)), impl="matmul1")


@pytest.mark.parametrize("impl", ["s2d", "lax", "auto"])
def test_strided_conv_reformulation_equals_definition(impl):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 10, 3))
    w = rng.normal(size=(4, 4, 3, 5))
    conv = functools.partial(ops.conv_4x4_s2, impl=impl)
    with jax.enable_x64(True):
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        np.testing.assert_allclose(np.asarray(conv(xj, wj)), _torch_conv(x, w, 2, 1), atol=1e-12)
        cot = jnp.asarray(rng.normal(size=(2, 4, 5, 5)))
        g_new = jax.grad(lambda a, b: jnp.sum(conv(a, b) * cot), argnums=(0, 1))(xj, wj)
        g_ref = jax.grad(lambda a, b: jnp.sum(ops.conv_reference(a, b, 2, 1) * cot), argnums=(0, 1))(xj, wj)
        for a, b in zip(g_new, g_ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)
        # the first/last layers' matrix forms
        z = rng.normal(size=(2, 3))
        np.testing.assert_allclose(np.asarray(ops.project_1x1(jnp.asarray(z), wj)),
                                   _torch_conv_transpose(z[:, None, None, :], w, 1, 0), atol=1e-12)
        h = rng.normal(size=(2, 4, 4, 3))
        np.testing.assert_allclose(np.asarray(ops.conv_valid_4x4(jnp.asarray(h), wj)),
                                   _torch_conv(h, w, 1, 0)[:, 0, 0], atol=1e-12)


def test_models_hold_the_formulation_as_a_static_field_the_jit_cache_sees():
    """The formulation is a field of the networks (part of the graph definition, so another choice
    is another jit cache entry), not a module global; every choice computes the same network."""
    z = jax.random.normal(jax.random.key(0), (2, 4), jnp.float32)
    default = models.Generator(nz=4, ngf=4, rngs=nnx.Rngs(0))
    lax = models.Generator(nz=4, ngf=4, rngs=nnx.Rngs(0), conv_t_impl="lax")
    assert default.conv_t_impl == "auto" and lax.conv_t_impl == "lax"
    g_default, g_lax = nnx.graphdef(default), nnx.graphdef(lax)
    assert g_default != g_lax and hash(g_default) != hash(g_lax)
    np.testing.assert_allclose(np.asarray(lax(z, train=True)), np.asarray(default(z, train=True)), atol=1e-5)
    x = jnp.tanh(jax.random.normal(jax.random.key(1), (2, 32, 32, 1), jnp.float32))
    d_default = models.Discriminator(ndf=4, rngs=nnx.Rngs(0))
    d_s2d = models.Discriminator(ndf=4, rngs=nnx.Rngs(0), conv_impl="s2d")
    assert nnx.graphdef(d_default) != nnx.graphdef(d_s2d)
    np.testing.assert_allclose(np.asarray(d_s2d(x, train=True)), np.asarray(d_default(x, train=True)), atol=1e-5)
    parts, st = steps.build(SMALL, conv_t_impl="phase", conv_impl="lax")
    assert nnx.merge(parts.g_def, st["g"]["params"], st["g"]["stats"]).conv_t_impl == "phase"
    assert nnx.merge(parts.d_def, st["d"]["params"], st["d"]["stats"]).conv_impl == "lax"
    with pytest.raises(ValueError, match="choose one of auto, phase"):
        models.Generator(nz=4, ngf=4, rngs=nnx.Rngs(0), conv_t_impl="fast")
    with pytest.raises(ValueError, match="choose one of auto, lax"):
        ops.conv_4x4_s2(x, jnp.zeros((4, 4, 1, 2)), impl="phase")


def test_shared_layers_live_in_models_layers():
    from rdfia_jax.dann import models as dann_models
    from rdfia_jax.models import layers

    assert ops.space_to_depth is layers.space_to_depth and dann_models.space_to_depth is layers.space_to_depth
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    s = layers.space_to_depth(x)
    assert s.shape == (2, 2, 3, 12)
    np.testing.assert_array_equal(np.asarray(s[:, 1, 2, 3 * 3 + 1]), np.asarray(x[:, 3, 5, 1]))  # (a, b) = (1, 1)
    np.testing.assert_array_equal(np.asarray(layers.depth_to_space(s, 3)), np.asarray(x))
    ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(np.asarray(layers.max_pool_2x2(x)), np.asarray(ref))


def test_conditional_label_branch_equals_convolving_the_expanded_label_image():
    wy = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 10, 8)).astype(np.float32))
    y = jax.nn.one_hot(jnp.array([0, 4, 9]), 10, dtype=jnp.float32)
    image = jnp.broadcast_to(y[:, None, None, :], (3, 32, 32, 10))
    direct = ops.conv_reference(image, wy, 2, 1)
    eye = jnp.broadcast_to(jnp.eye(10, dtype=jnp.float32)[:, None, None, :], (10, 32, 32, 10))
    fast = jnp.einsum("nk,khwc->nhwc", y, ops.conv_4x4_s2(eye, wy))  # what CondDiscriminator computes
    np.testing.assert_allclose(np.asarray(fast), np.asarray(direct), atol=1e-5)


# ----------------------------------------------------------------------------- gradients
def _to64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


@pytest.mark.parametrize("which", ["G", "D", pytest.param("cG", marks=pytest.mark.slow),
                                   pytest.param("cD", marks=pytest.mark.slow)])
def test_check_grads_float64_smooth(which):
    # flax's BatchNorm promotes its statistics with float32 (rejected by strict promotion in float64)
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        rngs = nnx.Rngs(0)
        module = {
            "G": lambda: models.Generator(nz=3, ngf=2, rngs=rngs, smooth=True),
            "D": lambda: models.Discriminator(ndf=2, rngs=rngs, smooth=True),
            "cG": lambda: models.CondGenerator(nz=2, rngs=rngs, smooth=True),
            "cD": lambda: models.CondDiscriminator(rngs=rngs, smooth=True),
        }[which]()
        graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
        params, stats = _to64(params), _to64(stats)
        key = jax.random.key(1)
        y = jax.nn.one_hot(jnp.array([1, 5, 8]), 10, dtype=jnp.float64)
        if which in ("G", "cG"):
            x = jax.random.normal(key, (3, module.nz), jnp.float64)
        else:
            x = jnp.tanh(jax.random.normal(key, (3, 32, 32, 1), jnp.float64))
        # big models: check a random projection of the parameters' gradient (cheap, still exact test)
        # (scaled like the parameters themselves, so that eps moves them a little)
        direction = jax.tree_util.tree_map(lambda a: 0.02 * jax.random.normal(key, a.shape, a.dtype), params)
        weights = jax.random.normal(jax.random.key(2), (3, 32, 32, 1) if which in ("G", "cG") else (3,), jnp.float64)

        @jax.jit
        def f(t, inp):
            p = jax.tree_util.tree_map(lambda a, d: a + t * d, params, direction)
            m = nnx.merge(graphdef, p, stats, copy=True)
            out = m(inp, train=True) if which in ("G", "D") else m(inp, y, train=True)
            return jnp.sum(out * weights)

        check_grads(f, (jnp.float64(0.0), x), order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-4)


# ----------------------------------------------------------------------------- training step
SMALL = steps.GanConfig(nz=8, ngf=4, ndf=4, batch_size=8, epochs=2, seed=3)


@pytest.fixture(scope="module")
def small_gan():
    """A small DCGAN with its step jitted once, shared by the step tests (compilation is the cost)."""
    parts, state = steps.build(SMALL)
    traces = xla.TraceCounter()
    step = jax.jit(steps.make_train_step(parts, traces=traces))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 32, 1), dtype=np.uint8)
    get_batch, spe = loop.array_batches({"x": images}, SMALL.batch_size, SMALL.seed)
    return parts, state, step, traces, get_batch, spe


def _equal_trees(a, b):
    la = [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
          for x in jax.tree_util.tree_leaves(a)]
    lb = [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
          for x in jax.tree_util.tree_leaves(b)]
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_step_is_deterministic_traced_once_and_updates_everything(small_gan):
    parts, state, step, traces, get_batch, _ = small_gan
    batch = get_batch(0, 0)
    s1, m1 = step(state, batch, jnp.int32(0))
    s2, m2 = step(state, batch, jnp.int32(0))
    s3, _ = step(s1, get_batch(0, 1), jnp.int32(1))
    assert traces[steps.TRACE_NAME] == 1, "the training step was retraced"
    assert _equal_trees(s1, s2) and {k: float(v) for k, v in m1.items()} == {k: float(v) for k, v in m2.items()}
    for part in ("g", "d"):
        for kind in ("params", "stats"):
            before = jax.tree_util.tree_leaves(state[part][kind])
            after = jax.tree_util.tree_leaves(s1[part][kind])
            assert all(not np.array_equal(a, b) for a, b in zip(before, after)), f"{part} {kind} not all updated"
    assert all(np.isfinite(float(v)) for v in m1.values()) and 0 < float(m1["d_real"]) < 1
    # sampling in inference mode: a pure function of the state, which it leaves unchanged
    sample = steps.make_sampler(parts)
    z = jnp.ones((4, SMALL.nz), jnp.float32)
    a = np.asarray(sample(s3["g"], z))
    assert np.array_equal(a, np.asarray(sample(s3["g"], z))) and a.shape == (4, 32, 32, 1)
    train_mode, _ = steps.generate(parts, s3["g"], z, None, train=True)
    assert not np.allclose(np.asarray(train_mode), a)


def test_kill_and_resume_gives_identical_parameters(small_gan, tmp_path):
    parts, state, step, traces, get_batch, spe = small_gan
    kwargs = dict(steps_per_epoch=spe, epochs=SMALL.epochs, progress=False, jit=False)
    reference = loop.run(step, state, get_batch, **kwargs)

    class Killed(Exception):
        pass

    def kill(steps_done, st, history):
        if steps_done == 5:
            raise Killed

    fp = {"gan": SMALL.fingerprint()}
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=fp, keep=2)
    with pytest.raises(Killed):
        loop.run(step, state, get_batch, store=store, save_every=3, hooks=[loop.Hook(1, kill)], **kwargs)
    assert store.latest_step() == 3
    fresh_parts, fresh_state = steps.build(SMALL)  # a new process would rebuild the initial state
    resumed = loop.run(step, fresh_state, get_batch, store=store, save_every=3, resume=True, **kwargs)
    assert resumed.resumed_from == 3 and resumed.steps_done == reference.steps_done == 8
    assert _equal_trees(resumed.state, reference.state)
    np.testing.assert_array_equal(resumed.history["loss_g"], reference.history["loss_g"])
    assert traces.check(steps.TRACE_NAME)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    _, state = steps.build(SMALL)
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"gan": SMALL.fingerprint()})
    store.save(1, state)
    other_cfg = SMALL.replace(nz=9)
    _, other_state = steps.build(other_cfg)
    with pytest.raises(RdfiaError, match="another configuration"):
        checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"gan": other_cfg.fingerprint()}).restore(other_state)
    with pytest.raises(RdfiaError, match="different architecture"):  # same fingerprint, other shapes
        store.restore(other_state)


# ----------------------------------------------------------------------------- score
def test_frechet_distance_matches_scipy_formula():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, c1 = score.gaussian_stats(a)
    mu2, c2 = score.gaussian_stats(b)
    covmean = scipy_linalg.sqrtm(c1 @ c2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))
    assert abs(score.frechet_distance(mu1, c1, mu2, c2) - expected) < 1e-6 * max(1.0, expected)
    assert abs(score.frechet_distance(mu1, c1, mu1, c1)) < 1e-6


# ----------------------------------------------------------------------------- outputs
def test_results_table_records_diverged_runs_and_samples_npz(tmp_path):
    from rdfia_jax.gan import run

    base = {"config": steps.GanConfig().__dict__ | {"kind": "gan"}, "dataset": "digits", "smoke": True,
            "out": str(tmp_path / "x"), "total_steps": 40, "data_description": "digits -- NOT MNIST"}
    ok = base | {"name": "default", "status": "ok", "steps": 40, "score": {"confidence": 0.9, "coverage": 0.95, "frechet": 3.2}}
    bad = base | {"name": "lr_x100", "status": "diverged", "steps": 7, "message": "training diverged at step 7"}
    sweeps.write_table([sweeps._row(ok), sweeps._row(bad)], tmp_path, note="test")
    md = (tmp_path / "results.md").read_text()
    assert "| lr_x100 | diverged |" in md and "| default | ok |" in md and "7/40" in md
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    from rdfia_jax.results import read_results

    rows = read_results(tmp_path)  # the JSON keeps raw values, same columns
    assert [r["run"] for r in rows] == ["default", "lr_x100"] and list(rows[0]) == sweeps.COLUMNS
    assert rows[0]["coverage"] == 0.95 and rows[1]["coverage"] is None and rows[1]["steps"] == "7/40"
    images = np.linspace(-1, 1, 2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32, 1)
    path = run.write_samples(tmp_path / "s.npz", images, np.array([3, 4]), description="test")
    with np.load(path) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (2, 32, 32, 1)
        assert f["images"].min() == 0 and f["images"].max() == 255 and list(f["labels"]) == [3, 4]
    with pytest.raises(RdfiaError, match=".npz"):
        run.write_samples(tmp_path / "s.png", images, None, description="test")
