"""The harness's Keras 3 peer and memory columns: the Keras networks' training steps do what the
practical's do (gradient reversal, parameters move, finite losses), and the tables gain the Keras and
memory columns only when there are such rows.

Keras runs in a subprocess with ``KERAS_BACKEND=jax`` set before its import, so this test process's
JAX configuration stays as conftest sets it. Skipped (with the reason) when keras is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent

KERAS_CHECKS = """
import json, os
os.environ["KERAS_BACKEND"] = "jax"
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
import keras
from benchmarks import keras_models as K
from benchmarks.workloads_vis import keras_saliency_fn
out = {"backend": keras.backend.backend()}

# gradient reversal: identity forward, -factor * upstream backward, no gradient to the factor
x = jnp.arange(6.0).reshape(2, 3)
w = jnp.asarray([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
f = jnp.float32(0.7)
y = K.reverse_gradient(x, f)
gx, gf = jax.grad(lambda a, b: jnp.sum(w * K.reverse_gradient(a, b)), argnums=(0, 1))(x, f)
out["grl_forward_equal"] = bool(jnp.array_equal(y, x))
out["grl_grad"] = np.asarray(gx).tolist()
out["grl_grad_expected"] = np.asarray(-0.7 * w).tolist()
out["grl_factor_grad"] = float(gf)

# the DANN network: the GRL layer flips the domain loss's gradient reaching the features
net = K.dann_network()
grl = net.get_layer("grl")
tv = [v.value for v in net.trainable_variables]
xb = np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype(np.float32)

@jax.jit
def domain_grad(tv, ntv):
    def loss(tv):
        (_, dom), _ = net.stateless_call(tv, ntv, xb)
        return jnp.sum(dom)
    return jax.grad(loss)(tv)

def domain_grads(factor):
    grl.factor.assign(factor)
    return [np.asarray(a) for a in domain_grad(tv, [v.value for v in net.non_trainable_variables])]
g_plus, g_minus = domain_grads(1.0), domain_grads(-1.0)
conv_kernel = 0  # the first convolution's kernel
assert tuple(net.trainable_variables[conv_kernel].shape) == (5, 5, 3, 32)
head_kernel = [i for i, v in enumerate(net.trainable_variables) if "domain_logits" in v.path][0]
out["dann_feature_grad_flipped"] = bool(np.allclose(g_plus[conv_kernel], -g_minus[conv_kernel], atol=1e-6)
                                        and np.abs(g_plus[conv_kernel]).max() > 0)
out["dann_head_grad_same"] = bool(np.allclose(g_plus[head_kernel], g_minus[head_kernel]))

# one DANN train_on_batch: finite loss, parameters move
model = K.dann_model(100)
before = [np.asarray(v.value).copy() for v in model.trainable_variables]
model.get_layer("grl").factor.assign(0.3)
loss = model.train_on_batch(xb, (np.asarray([1, 2], np.int32), np.asarray([[1], [1], [0], [0]], np.float32)))
out["dann_loss"] = float(loss)
out["dann_moved"] = all(not np.array_equal(b, np.asarray(v.value)) for b, v in zip(before, model.trainable_variables))

# a small DCGAN (same code path, narrow widths): two compiled steps
g, d = K.dcgan(nz=8, ngf=4, ndf=4)
gan = K.GAN(g, d, nz=8)
gan.compile(d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5), g_optimizer=keras.optimizers.Adam(5e-4, beta_1=0.5))
state0 = gan.initial_state()
copy0 = jax.tree.map(np.array, state0)
step = jax.jit(gan.train_step)
real = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32)
logs, state1 = step(state0, real)
logs2, state2 = step(state1, real)
out["gan_logs"] = {k: float(v) for k, v in logs.items()}
out["gan_g_moved"] = all(not np.array_equal(a, np.asarray(b)) for a, b in zip(copy0[0], state1[0]))
out["gan_d_moved"] = all(not np.array_equal(a, np.asarray(b)) for a, b in zip(copy0[2], state1[2]))
out["gan_bn_stats_moved"] = not np.array_equal(copy0[3][1], np.asarray(state1[3][1]))  # a D moving variance
out["gan_seed_advanced"] = not np.array_equal(np.asarray(state1[6]), np.asarray(state2[6]))
gan.assign_state(state2)
out["gan_assign"] = bool(np.array_equal(np.asarray(gan.generator.trainable_variables[0].value), np.asarray(state2[0][0])))

# saliency through stateless_call on a linear model: |W[:, t]| max over channels
inp = keras.Input((2, 2, 3))
lin = keras.Model(inp, keras.layers.Dense(4, use_bias=False)(keras.layers.Flatten()(inp)))
W = np.asarray(lin.trainable_variables[0].value).reshape(2, 2, 3, 4)
sal = keras_saliency_fn(lin)([v.value for v in lin.trainable_variables], [], jnp.ones((2, 2, 2, 3)),
                             jnp.asarray([1, 3], jnp.int32))
out["saliency_ok"] = bool(np.allclose(np.asarray(sal), np.abs(W[..., [1, 3]]).max(axis=2).transpose(2, 0, 1),
                                      atol=1e-6))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def keras_checks() -> dict:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (the bench extra): no Keras peer to check")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-c", KERAS_CHECKS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_keras_runs_on_jax(keras_checks):
    assert keras_checks["backend"] == "jax"


@pytest.mark.slow
def test_gradient_reversal_flips_the_sign(keras_checks):
    assert keras_checks["grl_forward_equal"]
    np.testing.assert_allclose(keras_checks["grl_grad"], keras_checks["grl_grad_expected"], rtol=1e-6)
    assert keras_checks["grl_factor_grad"] == 0.0
    # in the network: features get the domain gradient reversed, the domain head does not
    assert keras_checks["dann_feature_grad_flipped"]
    assert keras_checks["dann_head_grad_same"]


@pytest.mark.slow
def test_dann_train_on_batch_moves_parameters(keras_checks):
    assert 0.0 < keras_checks["dann_loss"] < 100.0
    assert keras_checks["dann_moved"]


@pytest.mark.slow
def test_dcgan_step_updates_both_networks(keras_checks):
    logs = keras_checks["gan_logs"]
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake", "d_fake_g"}
    assert all(0.0 < v < 100.0 for v in logs.values())  # finite, and BCE / sigmoid outputs are positive
    assert all(0.0 < logs[k] < 1.0 for k in ("d_real", "d_fake", "d_fake_g"))
    assert keras_checks["gan_g_moved"] and keras_checks["gan_d_moved"]
    assert keras_checks["gan_bn_stats_moved"]
    assert keras_checks["gan_seed_advanced"]  # a fresh z every step
    assert keras_checks["gan_assign"]


@pytest.mark.slow
def test_keras_saliency_is_the_input_gradient(keras_checks):
    assert keras_checks["saliency_ok"]


# ----------------------------------------------------------------------------- harness (no keras needed)

KERAS_ROWS = {"vgg16_infer_b1", "vgg16_infer_b8", "vgg16_infer_b32", "vgg16_relu7_features_b8",
              "vgg16_relu7_features_b32", "alexnet_relu7_features_b32", "saliency_squeezenet1_1_b5",
              "saliency_vgg16_b5", "dcgan_step_b128", "cdcgan_step_b128", "dann_step_b64x2"}


def test_list_has_keras_rows_named_like_the_jax_rows():
    found = harness.discover()
    keras_names = {w.name for w in found if w.framework == "keras"}
    jax_names = {w.name for w in found if w.framework == "jax"}
    assert keras_names == KERAS_ROWS
    assert keras_names <= jax_names


def _row(name, fw, median, rounds=None, **extra):
    r = dict(name=name, framework=fw, section="", unit="steps", items=1, median_s=median, first_s=median + 1.0,
             compile_s=1.0, n=5, throughput=1 / median, device="cpu", version=f"{fw} 1", precision="float32", **extra)
    if rounds:
        r.update(rounds=len(rounds), round_medians_s=rounds)
    return r


def test_markdown_without_keras_or_memory_keeps_its_columns():
    table = harness.combine([_row("a", "jax", 0.1), _row("a", "torch", 0.2)])
    lines = harness.to_markdown(table, "float32").splitlines()
    header = next(line for line in lines if line.startswith("| workload"))
    assert header.count("|") == 6 and "keras" not in header and "MiB" not in header
    assert "**2.00x**" in lines[-1]


def test_markdown_keras_speedup_with_round_range_and_memory():
    mem = dict(isolated=True, base_mib=100.0, held_mib=300.0)
    table = harness.combine(harness.pool_rounds([
        [_row("a", "jax", 0.1, peak_mib=400.0, **mem), _row("a", "torch", 0.2, peak_mib=500.0, **mem),
         _row("a", "keras", 0.3, peak_mib=600.0, **mem)],
        [_row("a", "jax", 0.1, peak_mib=410.0, **mem), _row("a", "torch", 0.2, peak_mib=500.0, **mem),
         _row("a", "keras", 0.4, peak_mib=600.0, **mem)],
    ]))
    assert table[0]["speedup_keras"] == pytest.approx(3.5)
    assert table[0]["speedup_keras_rounds"] == pytest.approx([3.0, 4.0])
    md = harness.to_markdown(table, "float32")
    header = next(line for line in md.splitlines() if line.startswith("| workload"))
    assert "speed-up (keras/jax)" in header and "peak MiB (jax / torch / keras)" in header
    row = md.splitlines()[-1]
    assert "**3.50x** (rounds 3.00-4.00)" in row
    assert "| 405 / 500 / 600 | 300 / 300 / 300 |" in row  # peak: median of the rounds
    assert "keras 1" in md  # its version on the versions line


def test_memory_readings_are_plausible():
    assert 1.0 < harness.rss_mib() <= harness.peak_rss_mib() * 1.01


def test_malloc_variable_matches_the_library():
    from rdfia_jax import xla

    assert harness.JAX_MALLOC_ENV == xla.MALLOC_ENV_VAR


@pytest.mark.parametrize("isolate", [True, False])
def test_run_passes_isolation_and_malloc_to_each_worker(monkeypatch, isolate):
    calls = []

    class Done:
        returncode, stdout = 0, "[]"

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs["env"]))
        return Done()

    monkeypatch.setattr(harness.subprocess, "run", fake_run)
    flags = [] if isolate else ["--no-isolate"]
    harness.main(["run", "--filter", "^(dann_step_b64x2|dcgan_step_b128)$", "--frameworks", "jax,torch,keras",
                  "--jax-host-malloc", "system", "--no-write", *flags])
    fws = [cmd[cmd.index("--framework") + 1] for cmd, _ in calls]
    assert all(("--isolate" if isolate else "--no-isolate") in cmd for cmd, _ in calls)
    assert fws == (["jax", "torch", "keras"] * 2 if isolate else ["jax", "torch", "keras"])
    for cmd, env in calls:
        fw = cmd[cmd.index("--framework") + 1]
        assert env[harness.JAX_MALLOC_ENV] == ("system" if fw in ("jax", "keras") else "retain")
