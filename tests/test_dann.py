"""DANN (report section 3): GRL, network gradients, schedules, steps, runs, resume, bad input."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rdfia_jax import fileio, xla
from rdfia_jax.dann import catalogue, config as dconfig, report, runs
from rdfia_jax.dann import steps as dsteps
from rdfia_jax.dann.config import DannConfig
from rdfia_jax.dann.domains import Domains, image_statistics, make_get_batch
from rdfia_jax.dann.grl import grad_reverse
from rdfia_jax.dann.models import DANN, FEATURE_DIM, conv5x5_relu_pool_s2d
from rdfia_jax.errors import RdfiaError
from rdfia_jax.models.layers import max_pool_2x2


# ------------------------------------------------------------------------------ synthetic domains

def _dataset(n: int, rgb: bool, seed: int, name: str):
    """Class k = a bright horizontal bar at rows 2+2k..3+2k; the 'target' domain is RGB with a
    random coloured background (an easy MNIST -> MNIST-M analogue)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int64)
    rows = np.arange(28)[None, :, None]
    top = (2 + 2 * labels)[:, None, None]
    bar = ((rows >= top) & (rows < top + 2)) & (np.arange(28)[None, None, :] >= 4) & (np.arange(28)[None, None, :] < 24)
    img = (bar * 255).astype(np.int16)[..., None]
    img = img + rng.integers(0, 40, img.shape)
    if rgb:
        bg = rng.integers(0, 200, (n, 1, 1, 3))
        img = np.abs(bg - img)
    return types.SimpleNamespace(images=np.clip(img, 0, 255).astype(np.uint8), labels=labels, name=name)


def synthetic_domains(n_train=256, n_test=128) -> Domains:
    return Domains(_dataset(n_train, False, 0, "src"), _dataset(n_test, False, 1, "src"),
                        _dataset(n_train, True, 2, "tgt"), _dataset(n_test, True, 3, "tgt"),
                        source_name="src", target_name="tgt")


# ------------------------------------------------------------------------------ GRL

def test_grl_forward_is_identity_and_backward_is_minus_lambda_times_gradient():
    x = jax.random.normal(jax.random.key(0), (5, 7))
    w = jax.random.normal(jax.random.key(1), (5, 7))
    traces = []

    def f_with(x, lam):
        traces.append(1)
        return jnp.sum(jnp.sin(grad_reverse(x, lam)) * w)

    def f_without(x):
        return jnp.sum(jnp.sin(x) * w)

    g_without = jax.grad(f_without)(x)
    grad_with = jax.jit(jax.grad(f_with))
    for lam in (0.0, 0.1, 0.76, 1.0, 2.5, -1.0):
        np.testing.assert_array_equal(jax.jit(grad_reverse)(x, jnp.float32(lam)), x)
        g = grad_with(x, jnp.float32(lam))
        np.testing.assert_allclose(g, -lam * g_without, rtol=1e-6, atol=1e-7)
    assert len(traces) == 1, "a new lambda value must not retrace (lambda is a traced argument)"


def test_grl_lambda_gets_zero_cotangent():
    x = jnp.arange(6.0).reshape(2, 3)
    g_lam = jax.grad(lambda lam: jnp.sum(grad_reverse(x, lam) ** 2))(jnp.float32(0.5))
    assert g_lam == 0.0
    with pytest.raises(ValueError):
        grad_reverse(x, jnp.ones(2))


# ------------------------------------------------------------------------------ network

def test_network_shapes_and_pool():
    model = DANN(rngs=nnx.Rngs(0))
    cls, dom, feats = model(jnp.zeros((3, 28, 28, 3)))
    assert cls.shape == (3, 10) and dom.shape == (3,) and feats.shape == (3, FEATURE_DIM)
    x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
    ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), ref)


def test_first_block_on_2x2_blocks_equals_conv_relu_pool():
    """conv5x5_relu_pool_s2d (space-to-depth, one 3x3 phase convolution, max over the 4 phases,
    bias and ReLU after the pool) equals max_pool(relu(conv + b)): values and all three gradients
    in float64, check_grads, and the whole feature extractor under both block1_impl settings, a
    field of the model that its graphdef (hence the jit cache) carries."""
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, 8, 10, 3)))
        kernel = jnp.asarray(0.1 * rng.normal(size=(5, 5, 3, 4)))  # conv outputs ~ N(0, 0.87)
        bias = jnp.asarray(0.5 * rng.normal(size=(4,)) - 0.9)  # many pooled maxima end below zero: the ReLU matters

        def textbook(x, k, b):
            y = jax.lax.conv_general_dilated(x, k, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return max_pool_2x2(jax.nn.relu(y + b[None, None, None, :]))

        out, ref = conv5x5_relu_pool_s2d(x, kernel, bias), textbook(x, kernel, bias)
        assert out.shape == (2, 4, 5, 4) and 0.1 < float(jnp.mean(ref == 0)) < 0.9
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-12)
        cot = jnp.asarray(rng.normal(size=out.shape))
        g_new = jax.grad(lambda *a: jnp.sum(conv5x5_relu_pool_s2d(*a) * cot), argnums=(0, 1, 2))(x, kernel, bias)
        g_ref = jax.grad(lambda *a: jnp.sum(textbook(*a) * cot), argnums=(0, 1, 2))(x, kernel, bias)
        for a, b in zip(g_new, g_ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)
        check_grads(conv5x5_relu_pool_s2d, (x, kernel, bias), order=1, modes=["rev"], eps=1e-6)
    folded_model, textbook_model = DANN(rngs=nnx.Rngs(1)), DANN(block1_impl="lax", rngs=nnx.Rngs(1))
    assert folded_model.features.block1_impl == "s2d"  # the default
    g_s2d, p_s2d = nnx.split(folded_model, nnx.Param)
    g_lax, p_lax = nnx.split(textbook_model, nnx.Param)
    assert g_s2d != g_lax and hash(g_s2d) != hash(g_lax)  # the jit cache tells them apart
    for a, b in zip(jax.tree.leaves(p_s2d), jax.tree.leaves(p_lax)):  # same parameters
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    images = jax.random.normal(jax.random.key(1), (3, 28, 28, 3))
    traces = xla.TraceCounter()
    feats = jax.jit(traces.wrap(lambda g, p, x: nnx.merge(g, p).features(x), "features"), static_argnums=0)
    folded, textbook = feats(g_s2d, p_s2d, images), feats(g_lax, p_s2d, images)
    assert traces["features"] == 2  # one compilation per implementation
    np.testing.assert_allclose(np.asarray(folded), np.asarray(textbook), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="block1_impl"):
        DANN(block1_impl="fast", rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_check_grads_float64_whole_loss():
    """check_grads (float64) of the DANN and pseudo-label losses w.r.t. every parameter.

    The GRL's backward is deliberately not the derivative of its forward, so the finite-difference
    check runs with GRL strength -1 (gradient x +1: the true derivative) -- it checks everything
    else: convs, pools, classifiers, losses, standardization, the one-pass source/target split.
    """
    with jax.enable_x64(True):
        graphdef, params = nnx.split(DANN(rngs=nnx.Rngs(0)), nnx.Param)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        rng = np.random.default_rng(0)
        batch = {"src_x": jnp.asarray(rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)),
                 "src_y": jnp.asarray(rng.integers(0, 10, 3).astype(np.int32)),
                 "tgt_x": jnp.asarray(rng.integers(0, 256, (3, 28, 28, 3), dtype=np.uint8))}
        for objective in ("dann", "pseudo"):
            cfg = dsteps.StepConfig(objective=objective, total_steps=10, pseudo_threshold=0.0)
            sched = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), dsteps.schedules(cfg, 7))
            sched["grl"] = jnp.float64(-1.0)
            loss = jax.jit(lambda p: dsteps.loss_and_metrics(p, graphdef, batch, sched, cfg)[0])
            assert loss(params).dtype == jnp.float64
            check_grads(loss, (params,), order=1, modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-5)


def test_schedules():
    cfg = dsteps.StepConfig(total_steps=100, gamma=2.0)
    s0, s1 = dsteps.schedules(cfg, 0), dsteps.schedules(cfg, 100)
    assert float(s0["lambda"]) == 0.0 and abs(float(s1["lambda"]) - 0.761594) < 1e-5
    assert abs(float(s0["lr"]) - 0.01) < 1e-9 and abs(float(s1["lr"]) - 0.01 / 11 ** 0.75) < 1e-8
    assert abs(float(dsteps.schedules(dsteps.StepConfig(total_steps=100, gamma=10.0), 100)["lambda"]) - 0.9999092) < 1e-6
    pos = dsteps.schedules(dsteps.StepConfig(total_steps=100, grl_scale=-1.0), 50)
    assert float(pos["grl"]) == -float(pos["lambda"])
    per_epoch = dsteps.StepConfig(total_steps=100, steps_per_epoch=10, lr_per_epoch=True)
    assert abs(float(dsteps.schedules(per_epoch, 19)["lr"]) - dsteps.dann_lr(0.1)) < 1e-9


def test_dann_pseudo_label_is_dann_until_its_ramp_then_adds_the_pseudo_term():
    """dann-pseudo-label: the same loss and gradients as dann while alpha(p) = 0 (p <= 0.5), the
    GRL reverses its domain gradient like DANN's, and after p = 0.5 the pseudo-label term is added."""
    spec_d, spec_p = catalogue.get_spec("dann"), catalogue.get_spec("dann-pseudo-label")
    mk = lambda spec: dconfig.step_config(spec, DannConfig(epochs=2), steps_per_epoch=10, mean=0.13, std=0.31)  # noqa: E731
    cfg_d, cfg_p = mk(spec_d), mk(spec_p)
    assert (cfg_p.objective, cfg_p.grl_scale, cfg_p.pseudo_ramp) == ("pseudo", 1.0, (0.5, 1.0))
    graphdef, state = dsteps.init_state(0, cfg_d)
    data = synthetic_domains(32, 8)
    batch = {"src_x": data.source_train.images[:8], "src_y": data.source_train.labels[:8].astype(np.int32),
             "tgt_x": data.target_train.images[:8]}
    grad = lambda cfg, i: jax.grad(dsteps.loss_and_metrics, has_aux=True)(  # noqa: E731
        state["params"], graphdef, batch, dsteps.schedules(cfg, i), cfg)
    for i in (3, 10):  # p = 0.15 and 0.5: alpha 0
        (g_d, m_d), (g_p, m_p) = grad(cfg_d, i), grad(cfg_p, i)
        assert float(dsteps.schedules(cfg_p, i)["alpha"]) == 0.0
        np.testing.assert_allclose(float(m_p["loss"]), float(m_d["loss"]), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g_d), jax.tree.leaves(g_p)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    cfg_all = dataclasses.replace(cfg_p, pseudo_threshold=0.0)  # every target image gets a pseudo-label
    sched = dsteps.schedules(cfg_all, 15)  # p = 0.75: alpha 0.5
    assert abs(float(sched["alpha"]) - 0.5) < 1e-6
    _, m = dsteps.loss_and_metrics(state["params"], graphdef, batch, sched, cfg_all)
    _, m0 = dsteps.loss_and_metrics(state["params"], graphdef, batch, sched, cfg_d)
    assert float(m["pseudo_fraction"]) == 1.0 and float(m["pseudo_loss"]) > 0.0
    np.testing.assert_allclose(float(m["loss"]), float(m0["loss"]) + 0.5 * float(m["pseudo_loss"]), rtol=1e-5)


def test_domain_accuracy_thresholds_sigmoid_not_raw_logit():
    """sigmoid(0.3) > 0.5 means 'source'; the original notebook's `logit > 0.5` would say target."""
    def fake_eval(params, images):
        n = images.shape[0]
        dom = jnp.where(images[:, 0, 0, 0] == 1, 0.3, -0.2)
        return jnp.zeros((n, 10)).at[:, 3].set(1.0), dom, jnp.zeros((n, 1))

    src = types.SimpleNamespace(images=np.ones((4, 28, 28, 1), np.uint8), labels=np.full(4, 3))
    tgt = types.SimpleNamespace(images=np.zeros((6, 28, 28, 3), np.uint8), labels=np.array([3, 3, 3, 1, 1, 1]))
    res = dsteps.evaluate(fake_eval, None, src, tgt, batch_size=4)
    assert res["domain_acc"] == 1.0 and res["source_acc"] == 1.0 and res["target_acc"] == 0.5


def test_step_traced_once_and_one_forward_pass_for_both_domains():
    cfg = dsteps.StepConfig(total_steps=5)
    graphdef, state = dsteps.init_state(0, cfg)
    traces = xla.TraceCounter()
    step = dsteps.make_train_step(graphdef, cfg, traces=traces)
    data = synthetic_domains(32, 8)
    batch = {"src_x": data.source_train.images[:8], "src_y": data.source_train.labels[:8].astype(np.int32),
             "tgt_x": data.target_train.images[:8]}
    lams = []
    for i in range(5):
        state, metrics = step(state, batch, jnp.int32(i))
        lams.append(float(metrics["lambda"]))
    assert traces["train_step"] == 1 and traces.check("train_step")
    assert lams[0] == 0.0 and all(a < b for a, b in zip(lams, lams[1:]))


def test_parameter_average_follows_its_recursion_and_never_feeds_back():
    """--ema-decay: ema_k = d ema_(k-1) + (1 - d) params_k from ema_0 = the initial parameters; the
    trained parameters are exactly those of a run without the average."""
    d = 0.8
    plain_cfg = dsteps.StepConfig(total_steps=4)
    ema_cfg = dataclasses.replace(plain_cfg, ema_decay=d)
    graphdef, plain = dsteps.init_state(0, plain_cfg)
    _, averaged = dsteps.init_state(0, ema_cfg)
    assert "ema_params" not in plain and set(averaged) == {"params", "opt_state", "ema_params"}
    data = synthetic_domains(32, 8)
    batch = {"src_x": data.source_train.images[:8], "src_y": data.source_train.labels[:8].astype(np.int32),
             "tgt_x": data.target_train.images[:8]}
    plain_step = dsteps.make_train_step(graphdef, plain_cfg)
    ema_step = dsteps.make_train_step(graphdef, ema_cfg)
    expected = jax.tree.map(np.asarray, averaged["params"])
    for i in range(4):
        plain, _ = plain_step(plain, batch, np.int32(i))
        averaged, _ = ema_step(averaged, batch, np.int32(i))
        expected = jax.tree.map(lambda e, w: d * e + (1 - d) * np.asarray(w), expected, averaged["params"])
    for a, b in zip(jax.tree.leaves(plain["params"]), jax.tree.leaves(averaged["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for got, want, last in zip(jax.tree.leaves(averaged["ema_params"]), jax.tree.leaves(expected),
                               jax.tree.leaves(averaged["params"])):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(np.asarray(g), np.asarray(w)) for g, w in
               zip(jax.tree.leaves(averaged["ema_params"]), jax.tree.leaves(averaged["params"])))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay"):
            dsteps.StepConfig(ema_decay=bad)


def test_gradient_clipping_caps_the_first_update_and_logs_the_unclipped_norm():
    """--clip-norm c: the first update (momentum buffer empty) is the plain one scaled by c / |g|
    when |g| > c; grad_norm is the unclipped global norm either way."""
    plain_cfg = dsteps.StepConfig(total_steps=4)
    graphdef, state = dsteps.init_state(0, plain_cfg)
    data = synthetic_domains(32, 8)
    batch = {"src_x": data.source_train.images[:8], "src_y": data.source_train.labels[:8].astype(np.int32),
             "tgt_x": data.target_train.images[:8]}
    plain, plain_metrics = dsteps.make_train_step(graphdef, plain_cfg)(state, batch, np.int32(0))
    norm = float(plain_metrics["grad_norm"])
    grads, _ = jax.grad(dsteps.loss_and_metrics, has_aux=True)(
        state["params"], graphdef, batch, dsteps.schedules(plain_cfg, 0), plain_cfg)
    assert norm == pytest.approx(float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))), rel=1e-5)
    cap = norm / 4
    clip_cfg = dataclasses.replace(plain_cfg, clip_norm=cap)
    _, clip_state = dsteps.init_state(0, clip_cfg)
    clipped, clip_metrics = dsteps.make_train_step(graphdef, clip_cfg)(clip_state, batch, np.int32(0))
    assert float(clip_metrics["grad_norm"]) == pytest.approx(norm, rel=1e-6)
    for w0, wp, wc in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(plain["params"]),
                          jax.tree.leaves(clipped["params"])):
        np.testing.assert_allclose(np.asarray(w0 - wc), np.asarray(w0 - wp) * 0.25, rtol=2e-3, atol=1e-8)
    # A cap above the norm changes nothing.
    loose_cfg = dataclasses.replace(plain_cfg, clip_norm=norm * 2)
    _, loose_state = dsteps.init_state(0, loose_cfg)
    loose, _ = dsteps.make_train_step(graphdef, loose_cfg)(loose_state, batch, np.int32(0))
    for wp, wl in zip(jax.tree.leaves(plain["params"]), jax.tree.leaves(loose["params"])):
        np.testing.assert_allclose(np.asarray(wl), np.asarray(wp), rtol=1e-6, atol=1e-7)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="clip_norm"):
            dsteps.StepConfig(clip_norm=bad)


def test_proxy_a_distance_separates_and_confuses():
    from rdfia_jax.dann.alignment import proxy_a_distance

    rng = np.random.default_rng(0)
    same = proxy_a_distance(rng.normal(size=(400, 20)), rng.normal(size=(400, 20)))
    shifted = proxy_a_distance(rng.normal(size=(400, 20)), rng.normal(size=(400, 20)) + 3.0)
    assert same["n_fit"] == 400 and same["n_test"] == 400
    assert abs(same["pad"]) < 0.4 and shifted["pad"] == 2.0 and shifted["error"] == 0.0
    assert same["pad"] == pytest.approx(2 * (1 - 2 * same["error"]))
    # Deterministic in its seed.
    xs, xt = rng.normal(size=(100, 5)), rng.normal(size=(100, 5)) + 0.5
    assert proxy_a_distance(xs, xt, seed=3) == proxy_a_distance(xs, xt, seed=3)
    with pytest.raises(RdfiaError, match="same D"):
        proxy_a_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(RdfiaError, match="at least 4"):
        proxy_a_distance(np.zeros((3, 3)), np.zeros((10, 3)))
    with pytest.raises(RdfiaError, match="NaN"):
        proxy_a_distance(np.full((10, 3), np.nan), np.zeros((10, 3)))


# ------------------------------------------------------------------------------ runs

@pytest.mark.slow
def test_short_dann_run_learns(tmp_path):
    rec = runs.run_one("dann", 0, DannConfig(epochs=3, batch_sizes=(16, 16)), out=tmp_path,
                       domains=synthetic_domains(), figures=False, progress=False, save_every=100)
    hist = np.load(tmp_path / "dann-3ep" / "seed0" / "history.npz")  # 3 epochs: not the default 20
    assert rec["steps"] == 48 and hist["label_loss"].shape == (48,)
    assert hist["label_loss"][-4:].mean() < hist["label_loss"][:4].mean() - 1.0
    assert rec["source_acc"] > 0.8  # chance is 0.1
    assert 0.0 <= rec["domain_acc"] <= 1.0 and -2.0 <= rec["pad"] <= 2.0
    assert "last_iterate" not in rec and rec["ema_decay"] == 0.0
    assert (tmp_path / "results.csv").exists() is False  # run_one alone writes no table
    paths = report.write_table(tmp_path)
    assert "| dann | 0 | 3 |" in paths["md"].read_text()
    assert paths["csv"].read_text().startswith("run,seeds,epochs,src acc,tgt acc,domain acc,PAD,wall time (s)")
    assert "Mean ± sd over seeds." in paths["md"].read_text()
    import json

    row = json.loads(paths["json"].read_text())["rows"][0]
    assert row["run"] == "dann" and row["src acc"] == f"{rec['source_acc']:.4f}"


def test_variants_get_their_own_folders_and_table_rows():
    name = lambda **kw: DannConfig(**kw).folder_name("dann")  # noqa: E731
    assert name() == "dann" and name(epochs=20) == "dann"
    assert name(gamma=10.0, lr_per_epoch=True) == "dann-gamma10-lr-per-epoch"
    assert name(epochs=100) == "dann-100ep" and name(smoke=True, epochs=1) == "dann-smoke"
    assert name(lr_per_epoch=True, input_norm="per-domain") == "dann-lr-per-epoch-per-domain-norm"
    assert name(lr_per_epoch=True, ema_decay=0.999) == "dann-lr-per-epoch-ema0.999"
    assert name(lr_per_epoch=True, clip_norm=5.0) == "dann-lr-per-epoch-clip5"
    base = dict(run="dann", epochs=20, gamma=2.0, source="MNIST", target="MNIST-M", domain_acc=0.5, wall_s=1.0,
                source_acc=0.99)
    records = [dict(base, seed=0, target_acc=0.70), dict(base, seed=1, target_acc=0.72),
               dict(base, seed=0, target_acc=0.80, lr_per_epoch=True),
               dict(base, seed=0, target_acc=0.90, input_norm="per-domain"),
               dict(base, seed=0, target_acc=0.60, ema_decay=0.999, pad=0.5),
               dict(base, seed=0, target_acc=0.65, clip_norm=5.0)]
    rows = {r["run"]: r for r in report.results_table(records)}
    assert set(rows) == {"dann", "dann (lr per epoch)", "dann (per-domain norm)", "dann (EMA 0.999)",
                         "dann (clip 5)"}  # never averaged together
    assert rows["dann (EMA 0.999)"]["PAD"] == "0.500" and rows["dann"]["PAD"] == "n/a"  # older records: no PAD
    assert rows["dann"]["seeds"] == "0,1" and rows["dann (lr per epoch)"]["target acc"] == "0.8000"


def test_per_domain_norm_uses_the_target_train_statistics(tmp_path, monkeypatch):
    """--input-norm per-domain: target images (training step and evaluation) are standardized with
    the mean/std of the target TRAIN images; the source keeps its own; the default leaves both on the
    source's (the practical)."""
    d = synthetic_domains(64, 16)
    d.mean, d.std = 0.1307, 0.3081
    tgt_stats = image_statistics(d.target_train.images)
    assert abs(tgt_stats[0] - image_statistics(d.target_test.images)[0]) > 1e-6  # train != test here
    base = DannConfig(epochs=1, batch_sizes=(16, 16))
    cfg = dconfig.plan_run("dann", 0, base.replace(input_norm="per-domain"), d, tmp_path).step_config
    assert cfg.input_stats("source") == (0.1307, 0.3081)
    np.testing.assert_allclose(cfg.input_stats("target"), tgt_stats, rtol=1e-12)
    practical = dconfig.plan_run("dann", 0, base, d, tmp_path).step_config
    assert practical.input_stats("target") == practical.input_stats("source") == (0.1307, 0.3081)
    with pytest.raises(RdfiaError, match="unknown --input-norm 'batch'"):
        base.replace(input_norm="batch")
    with pytest.raises(ValueError, match="together"):
        dsteps.StepConfig(target_mean=0.4)

    # The training step standardizes each half with its domain's statistics.
    seen = []
    real = dsteps.standardize
    monkeypatch.setattr(dsteps, "standardize", lambda x, m, s, *a: seen.append((x.shape[-1], m, s)) or real(x, m, s, *a))
    graphdef, state = dsteps.init_state(0, cfg)
    batch = make_get_batch(catalogue.get_spec("dann"), d, 0)[0](0, 0)
    dsteps.loss_and_metrics(state["params"], graphdef, batch, dsteps.schedules(cfg, 0), cfg)
    assert seen == [(1, 0.1307, 0.3081), (3, *cfg.input_stats("target"))]
    monkeypatch.undo()

    # Evaluation: the target's eval function equals a source one built on the target's statistics.
    images = d.target_test.images[:8]
    as_source = dataclasses.replace(practical, mean=cfg.target_mean, std=cfg.target_std)
    got = dsteps.make_eval_fn(graphdef, cfg, "target")(state["params"], images)
    want = dsteps.make_eval_fn(graphdef, as_source, "source")(state["params"], images)
    off = dsteps.make_eval_fn(graphdef, cfg, "source")(state["params"], images)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(got[0]), np.asarray(off[0]))
    src_fn, tgt_fn = dsteps.make_eval_fns(graphdef, cfg)
    np.testing.assert_allclose(np.asarray(tgt_fn(state["params"], images)[0]), np.asarray(got[0]), rtol=1e-6, atol=1e-6)
    same_src, same_tgt = dsteps.make_eval_fns(graphdef, practical)
    assert same_src is same_tgt  # the practical's normalization: one function, one compilation


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_kill_gives_identical_parameters(tmp_path):
    from rdfia_jax.train import loop

    # With a parameter average: it is part of the state a resume must restore exactly.
    config = DannConfig(epochs=2, batch_sizes=(16, 16), ema_decay=0.9)
    domains = synthetic_domains(128, 16)
    kwargs = dict(domains=domains, figures=False, progress=False, save_every=3, eval_every_epoch=False)
    ref = runs.run_one("pseudo-label", 1, config, out=tmp_path / "a", **kwargs)

    def kill(steps_done, state, history):
        if steps_done == 7:
            raise _Killed()

    with pytest.raises(_Killed):
        runs.run_one("pseudo-label", 1, config, out=tmp_path / "b", hooks=[loop.Hook(every=1, fn=kill, at_end=False)],
                     **kwargs)
    with pytest.raises(RdfiaError, match="resume"):
        runs.run_one("pseudo-label", 1, config, out=tmp_path / "b", **kwargs)
    mid = runs.evaluate_checkpoint("pseudo-label", 1, config, out=tmp_path / "b", domains=domains)
    assert mid["step"] == 6 and mid["total_steps"] == 16 and 0.0 <= mid["target_acc"] <= 1.0
    mid_ema = runs.evaluate_checkpoint("pseudo-label", 1, config, out=tmp_path / "b", domains=domains,
                                       params="ema_params", pad=True)
    assert mid_ema["step"] == 6 and -2.0 <= mid_ema["pad"] <= 2.0
    with pytest.raises(RdfiaError, match="no checkpoint yet"):  # a different decay is another run's folder
        runs.evaluate_checkpoint("pseudo-label", 1, config.replace(ema_decay=0.5), out=tmp_path / "b", domains=domains)
    resumed = runs.run_one("pseudo-label", 1, config, out=tmp_path / "b", resume=True, **kwargs)
    assert resumed["resumed_from"] == 6 and resumed["steps"] == 16
    assert set(resumed["state"]) == {"params", "opt_state", "ema_params"}
    for a, b in zip(jax.tree.leaves(ref["state"]), jax.tree.leaves(resumed["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The run reports the average and keeps the last iterate's numbers beside it.
    assert resumed["ema_decay"] == 0.9 and set(resumed["last_iterate"]) >= {"source_acc", "target_acc", "pad"}


# ------------------------------------------------------------------------------ bad input

def test_unknown_run_name(tmp_path):
    with pytest.raises(RdfiaError, match="unknown DANN run 'danm'"):
        runs.run_one("danm", out=tmp_path, domains=synthetic_domains(32, 8))
    from rdfia_jax.cli import main

    assert main(["dann", "nope", "--out", str(tmp_path)]) == 2


def test_empty_target_domain(tmp_path):
    d = synthetic_domains(32, 8)
    d.target_train = types.SimpleNamespace(images=np.zeros((0, 28, 28, 3), np.uint8),
                                           labels=np.zeros((0,), np.int64), name="tgt")
    with pytest.raises(RdfiaError, match="target train set is empty"):
        runs.run_one("dann", out=tmp_path, domains=d)


def test_mismatched_image_shapes(tmp_path):
    d = synthetic_domains(32, 8)
    d.target_train = types.SimpleNamespace(images=np.zeros((32, 32, 32, 3), np.uint8),
                                           labels=np.zeros((32,), np.int64), name="tgt")
    with pytest.raises(RdfiaError, match="image shapes differ"):
        runs.run_one("dann", out=tmp_path, domains=d)
    d = synthetic_domains(32, 8)
    d.target_test = types.SimpleNamespace(images=np.zeros((8, 28, 28, 4), np.uint8),
                                          labels=np.zeros((8,), np.int64), name="tgt")
    with pytest.raises(RdfiaError, match="4 channels"):
        runs.run_one("dann", out=tmp_path, domains=d)


def test_target_labels_only_reach_the_target_only_run():
    d = synthetic_domains(128, 8)
    for name in catalogue.RUN_NAMES:
        get_batch, _ = make_get_batch(catalogue.RUNS[name], d, seed=0)
        assert ("tgt_y" in get_batch(0, 0)) == (name == "target-only"), name


@pytest.mark.realdata
def test_real_mnist_standardization_constants(shared_data):
    from rdfia_jax import data

    mnist = data.load("mnist", "train", data_dir=shared_data)
    mean, std = image_statistics(mnist.images)
    assert abs(mean - data.MNIST_TRAIN_MEAN) < 1e-9 and abs(std - data.MNIST_TRAIN_STD) < 1e-9
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4


@pytest.mark.slow
def test_cli_smoke_run_with_average_and_clipping_writes_table_figures_and_both_evaluations(tmp_path):
    """End to end on the embedded digits pair (no download): `rdfia-jax dann dann --smoke` with a
    parameter average and gradient clipping."""
    import json

    from rdfia_jax.cli import main

    out = tmp_path / "out"
    assert main(["dann", "dann", "--dataset-pair", "digits", "--smoke", "--ema-decay", "0.9",
                 "--clip-norm", "3", "--out", str(out)]) == 0
    run_dir = out / "dann-ema0.9-clip3-smoke" / "seed0"
    assert (run_dir / "curves.png").stat().st_size > 0 and (run_dir / "tsne.png").stat().st_size > 0
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["ema_decay"] == 0.9 and rec["clip_norm"] == 3.0 and -2.0 <= rec["pad"] <= 2.0
    assert set(rec["last_iterate"]) >= {"source_acc", "target_acc", "domain_acc", "pad"}
    assert "last_iterate" in rec["evals"][-1]
    hist = np.load(run_dir / "history.npz")
    assert hist["grad_norm"].shape == (rec["steps"],) and np.all(hist["grad_norm"] > 0)
    assert "dann (EMA 0.9) (clip 3) [smoke]" in (out / "results.md").read_text()


# ------------------------------------------------------------------------------ config, resume, messages

# The fingerprint of the baseline smoke run's checkpoint (`dann dann --smoke --dataset-pair digits
# --ema-decay 0.999 --clip-norm 3`), as written by the code before the DannConfig refactor.
BASELINE_FINGERPRINT = {
    "config": {"clip_norm": 3.0, "ema_decay": 0.999, "gamma": 2.0, "grl_offset": 0.0, "grl_scale": 1.0,
               "labelled": "source", "lr0": 0.01, "lr_alpha": 10.0, "lr_beta": 0.75, "lr_per_epoch": False,
               "mean": 0.15635065061180722, "momentum": 0.9, "objective": "dann", "pseudo_alpha_max": 1.0,
               "pseudo_ramp": [0.1, 0.5], "pseudo_threshold": 0.9, "std": 0.2777766684429991,
               "steps_per_epoch": 16, "target_mean": None, "target_std": None, "total_steps": 16},
    "model": "dann-practical", "n_source": 1024, "n_target": 1024, "run": "dann", "seed": 0,
    "source": "digits", "src_batch": 64, "target": "digits_m", "tgt_batch": 64}


def test_fingerprint_is_unchanged_so_old_checkpoints_resume(tmp_path):
    """The checkpoint fingerprint derived from a DannConfig equals the one written before the refactor
    (the same options): existing checkpoints still resume."""
    from rdfia_jax.dann.domains import load_domains
    from rdfia_jax.train.checkpoint import _canonical

    config = DannConfig(smoke=True, dataset_pair="digits", ema_decay=0.999, clip_norm=3.0)
    domains = load_domains("digits", smoke=True)
    plan = dconfig.plan_run("dann", 0, config, domains, tmp_path)
    assert _canonical(plan.fingerprint) == _canonical(BASELINE_FINGERPRINT)
    assert plan.run_dir == tmp_path / "dann-ema0.999-clip3-smoke" / "seed0" and plan.epochs == 1
    # An unchanged practical run and the per-domain variant differ only where they should.
    other = dconfig.plan_run("dann", 0, config.replace(input_norm="per-domain"), domains, tmp_path).fingerprint
    assert {k for k in plan.fingerprint["config"] if plan.fingerprint["config"][k] != other["config"][k]} == \
        {"target_mean", "target_std"}


def test_config_refuses_bad_options_with_the_option_name():
    for kwargs, match in ((dict(epochs=0), "--epochs 0"), (dict(epochs=2.5), "--epochs"),
                          (dict(gamma=float("inf")), "--gamma inf"), (dict(gamma=0.0), "--gamma 0"),
                          (dict(gamma=float("nan")), "--gamma nan"), (dict(ema_decay=1.0), "--ema-decay 1"),
                          (dict(ema_decay=-0.1), "--ema-decay"), (dict(ema_decay=float("nan")), "--ema-decay"),
                          (dict(clip_norm=0.0), "--clip-norm 0"), (dict(clip_norm=float("inf")), "--clip-norm inf"),
                          (dict(input_norm="batch"), "--input-norm"), (dict(dataset_pair="svhn"), "--dataset-pair"),
                          (dict(batch_sizes=(16, 0)), "batch sizes")):
        with pytest.raises(RdfiaError, match=match):
            DannConfig(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DannConfig().gamma = 10.0
    assert hash(DannConfig(batch_sizes=[8, 8])) == hash(DannConfig(batch_sizes=(8, 8)))
    for seed in (-1, 1.5, True):
        with pytest.raises(RdfiaError, match="non-negative"):
            dconfig.check_seed(seed)


def _cli_error(capsys, argv) -> str:
    from rdfia_jax.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_validates_every_argument_before_any_work(tmp_path, capsys, monkeypatch):
    """Bad arguments give one-line errors naming the argument, before any data is read (the default
    pair needs MNIST, which this empty --data-dir lacks) or any folder written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    base = ["dann", "dann", "--data-dir", str(empty), "--out", str(out)]
    for extra, match in ((["--seeds=-1"], "seeds must be non-negative"), (["--seeds", "0,x"], "--seeds"),
                         (["--epochs", "0"], "--epochs 0"), (["--gamma", "inf"], "--gamma inf"),
                         (["--gamma", "-2"], "--gamma -2"), (["--ema-decay", "1"], "--ema-decay 1"),
                         (["--clip-norm", "inf"], "--clip-norm inf"), (["--clip-norm", "0"], "--clip-norm 0"),
                         (["--bsds-dir", str(empty), "--dataset-pair", "digits"], "--bsds-dir is for MNIST-M")):
        err = _cli_error(capsys, base + extra)
        assert match in err and "Traceback" not in err and "MNIST" not in err.split(match)[0], (extra, err)
    assert not out.exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is an existing file, not a folder" in _cli_error(capsys, ["dann", "dann", "--out", str(a_file)])
    assert "is a file" in _cli_error(capsys, ["dann", "dann", "--out", str(a_file / "sub")])
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_probe = fileio._probe_write

    def probe(folder):  # root ignores permission bits: simulate the read-only folder
        if Path(folder) == read_only:
            raise PermissionError(13, "Permission denied")
        real_probe(folder)

    monkeypatch.setattr(fileio, "_probe_write", probe)
    assert "not writable" in _cli_error(capsys, ["dann", "dann", "--out", str(read_only / "x")])


def test_cli_help_and_missing_data_name_the_digits_pair(tmp_path, capsys, monkeypatch):
    from rdfia_jax.cli import main

    with pytest.raises(SystemExit):
        main(["dann", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "'mnist' (the default)" in help_text and "--dataset-pair digits needs no download" in help_text
    assert "--bsds-dir" in help_text
    err = _cli_error(capsys, ["dann", "dann", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "`--dataset-pair digits`" in err and "no download" in err
    # --bsds-dir (which the BSDS500 error suggests) is accepted and reaches the MNIST-M loader.
    seen = {}

    def fake_load(name, split, *, data_dir=None, bsds_dir=None, **kw):
        seen[name] = bsds_dir
        raise RdfiaError("stop here")

    monkeypatch.setattr("rdfia_jax.data.load", fake_load)
    monkeypatch.setattr("rdfia_jax.dann.domains.DATASET_PAIRS", {"mnist": ("digits", "mnistm")})
    with pytest.raises(RdfiaError, match="stop here"):
        from rdfia_jax.dann.domains import load_domains

        load_domains("mnist", bsds_dir="/some/bsds")
    monkeypatch.setattr("rdfia_jax.dann.domains.DATASET_PAIRS", {"mnist": ("mnistm", "mnistm")})
    with pytest.raises(RdfiaError, match="stop here"):
        load_domains("mnist", bsds_dir="/some/bsds")
    assert seen == {"digits": None, "mnistm": "/some/bsds"}


@pytest.mark.slow
def test_divergence_message_gives_advice_that_works(tmp_path):
    """A NaN at step 0 (std 0: every input is inf): no checkpoint, so no --resume advice; the
    advice names gradient clipping. With a checkpoint, --resume is said to repeat the divergence."""
    from rdfia_jax.train.loop import TrainingDiverged

    d = synthetic_domains(32, 8)
    d.mean, d.std = 0.5, 0.0
    with pytest.raises(TrainingDiverged) as info:
        runs.run_one("dann", 0, DannConfig(epochs=1, batch_sizes=(16, 16)), out=tmp_path, domains=d,
                     figures=False, progress=False, eval_every_epoch=False)
    msg = str(info.value)
    assert "diverged at step 0" in msg and "--clip-norm 3" in msg and "--resume" not in msg
    advice = runs._divergence_advice(DannConfig(clip_norm=3.0), 500)
    assert "smaller --clip-norm" in advice and "--resume" in advice and "step 500" in advice


@pytest.mark.slow
def test_killed_and_resumed_run_keeps_its_evaluations(tmp_path, capsys):
    """Issue 22 item 6: after a kill and --resume, result.json's evals equal an uninterrupted run's
    (those made before the kill come from evals.json; checkpoints hold no evaluations)."""
    import json

    from rdfia_jax.train import loop

    config = DannConfig(epochs=2, batch_sizes=(16, 16))  # 8 steps per epoch: evaluations at 8 and 16
    domains = synthetic_domains(128, 16)
    kwargs = dict(domains=domains, figures=False, progress=False)
    ref = runs.run_one("dann", 0, config, out=tmp_path / "a", save_every=5, **kwargs)
    assert [e["step"] for e in ref["evals"]] == [8, 16]

    def kill_at(step):
        def fn(steps_done, state, history):
            if steps_done == step:
                raise _Killed()
        return loop.Hook(every=1, fn=fn, at_end=False)

    # Killed at step 11, after the evaluation at 8 and the checkpoint at 10: the resumed run redoes
    # steps 10-16 only, so the evaluation at 8 must come from evals.json.
    with pytest.raises(_Killed):
        runs.run_one("dann", 0, config, out=tmp_path / "b", save_every=5, hooks=[kill_at(11)], **kwargs)
    run_dir = tmp_path / "b" / "dann-2ep" / "seed0"
    assert [e["step"] for e in json.loads((run_dir / "evals.json").read_text())["evals"]] == [8]
    resumed = runs.run_one("dann", 0, config, out=tmp_path / "b", save_every=5, resume=True, **kwargs)
    assert resumed["resumed_from"] == 10
    assert resumed["evals"] == ref["evals"]
    assert json.loads((run_dir / "result.json").read_text())["evals"] == ref["evals"]

    # Killed right after the checkpoint at 8 but before its evaluation was saved (simulated by
    # deleting evals.json): the resumed run evaluates that checkpoint.
    with pytest.raises(_Killed):
        runs.run_one("dann", 0, config, out=tmp_path / "c", save_every=8, hooks=[kill_at(9)], **kwargs)
    (tmp_path / "c" / "dann-2ep" / "seed0" / "evals.json").unlink()
    resumed = runs.run_one("dann", 0, config, out=tmp_path / "c", save_every=8, resume=True, **kwargs)
    assert resumed["resumed_from"] == 8 and resumed["evals"] == ref["evals"]

    # --resume with other flags: another folder; it says so and names the runs it found.
    capsys.readouterr()
    with pytest.raises(_Killed):
        runs.run_one("dann", 0, config.replace(gamma=10.0), out=tmp_path / "b", resume=True,
                     hooks=[kill_at(1)], **kwargs)
    err = capsys.readouterr().err
    assert f"no checkpoint for these settings in {tmp_path / 'b' / 'dann-gamma10-2ep' / 'seed0'}" in err
    assert "starting fresh" in err and "dann-2ep/seed0 (step 16)" in err
