"""rdfia_jax.xla: the CPU compile options are probed, optional, and do not change results."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rdfia_jax import xla


def _conv_block_loss(w, x):
    y = lax.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jax.nn.relu(y) ** 2)


def test_options_are_probed_on_cpu():
    opts = xla.compiler_options()
    assert jax.default_backend() == "cpu"
    # None only when this jaxlib lacks the option or the user opted out.
    assert opts in (None, xla.YNN_OPTIONS)
    if os.environ.get(xla.ENV_VAR, "ynn") == "ynn":
        try:
            jax.jit(lambda v: v, compiler_options=xla.YNN_OPTIONS).lower(jnp.zeros(())).compile()
            supported = True
        except Exception:
            supported = False
        assert (opts is not None) == supported


def test_jit_matches_plain_jit_on_a_conv_gradient():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 14, 14, 32)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 5, 32, 48)) * 0.05, jnp.float32)
    grad = jax.grad(_conv_block_loss, argnums=(0, 1))
    fast = xla.jit(grad)(w, x)
    plain = jax.jit(grad)(w, x)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


def test_jit_as_decorator_keeps_static_args_and_lowering():
    @xla.jit(static_argnums=1)
    def power(v, k):
        return v ** k

    assert float(power(jnp.float32(3.0), 2)) == 9.0
    assert power.__name__ == "power"
    assert float(power.lower(jnp.float32(3.0), 3).compile()(jnp.float32(3.0))) == 27.0


def _run(code: str, env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{xla.ENV_VAR: env_value, "JAX_PLATFORMS": "cpu"})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_opt_out_and_bad_value():
    code = "from rdfia_jax import xla; print(xla.compiler_options())"
    out = _run(code, "xla")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    bad = _run(code, "fastest")
    assert bad.returncode != 0
    assert "RDFIA_JAX_CPU_KERNELS must be 'ynn' or 'xla'" in bad.stderr


def test_importing_the_library_starts_no_backend():
    # Every module that compiles at import would start the backend before a user can pick one.
    code = ("import jax, rdfia_jax.cli, rdfia_jax.dann.steps, rdfia_jax.gan.steps, rdfia_jax.vis.saliency, "
            "rdfia_jax.vis.classvis, rdfia_jax.transfer.features, rdfia_jax.attacks.fgsm_pgd\n"
            "from jax._src import xla_bridge\nprint(len(xla_bridge._backends))")
    out = _run(code, "ynn")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0"
