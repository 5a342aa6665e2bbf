"""rdfia_jax.xla: the CPU compile options are probed, optional, and do not change results."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


def test_tuned_kernels_off_compiles_with_xla_defaults(monkeypatch):
    tuned_options = xla.compiler_options()  # probed (and cached) before the spy counts compilations
    seen = []
    real_jit = jax.jit

    def spy(fun, **kwargs):
        seen.append(kwargs.get("compiler_options"))
        return real_jit(fun, **kwargs)

    monkeypatch.setattr(xla.jax, "jit", spy)
    x = jnp.arange(4.0, dtype=jnp.float32)
    plain = xla.jit(lambda v: v * 2, tuned_kernels=False)

    @xla.jit(tuned_kernels=False, static_argnums=1)
    def scaled(v, k):
        return v * k

    tuned = xla.jit(lambda v: v * 2)
    np.testing.assert_array_equal(plain(x), tuned(x))
    np.testing.assert_array_equal(scaled(x, 3), x * 3)
    assert seen == [None, tuned_options, None]


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


# ------------------------------------------------------------------------------ host allocator

_FAULTS_CODE = """
import resource, sys
from rdfia_jax import xla
applied = xla.retain_host_memory()  # first thing, as the CLI does
sys.path.insert(0, {root!r})
from benchmarks.workloads_dann import _jax_setup
run = _jax_setup("float32")
for _ in range(3):
    run()
per_step = []
for _ in range(4):  # the quietest of 4 windows: other processes' load moves single windows
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        run()
    per_step.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
print(sorted(applied), min(per_step))
"""


def _run_malloc(code: str, value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{xla.MALLOC_ENV_VAR: value, "JAX_PLATFORMS": "cpu"})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_host_malloc_opt_out_and_bad_value():
    code = "from rdfia_jax import xla; print(xla.retain_host_memory())"
    assert _run_malloc(code, "system").stdout.strip() == "{}"
    bad = _run_malloc(code, "fast")
    assert bad.returncode != 0 and "RDFIA_JAX_HOST_MALLOC must be 'retain' or 'system'" in bad.stderr
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert _run_malloc(code, "retain").stdout.strip() == str(
            {name: value for name, (_, value) in xla.HOST_MALLOC_SETTINGS.items()})


def test_only_the_cli_changes_the_host_allocator():
    """A library call changes no process-wide state: compiling and running through xla.jit on the
    CPU leaves malloc alone; the CLI entry point applies the settings before its command runs."""
    library = ("import jax.numpy as jnp\nfrom rdfia_jax import xla\n"
               "print(float(xla.jit(lambda x: x * 2)(jnp.ones(3)).sum()), "
               "xla.retain_host_memory.cache_info().currsize)")
    out = _run_malloc(library, "retain")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["6.0", "0"]
    through_cli = ("from rdfia_jax import cli, xla\nstatus = cli.main(['weights', 'list'])\n"
                   "print(status, xla.retain_host_memory.cache_info().currsize)")
    out = _run_malloc(through_cli, "retain")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 1"


@pytest.mark.slow
@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="the allocator settings are glibc's")
def test_retained_host_memory_stops_the_dann_step_faulting_its_temporaries_back_in():
    """Without the settings every step maps its ~38 MB of temporaries afresh (~9,400 page faults a
    step measured); with them the blocks are reused."""
    root = str(Path(__file__).resolve().parents[1])
    results = {}
    for value in ("retain", "system"):
        out = _run_malloc(_FAULTS_CODE.format(root=root), value)
        assert out.returncode == 0, out.stderr[-2000:]
        applied, faults = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
        results[value] = (applied, float(faults))
    assert results["system"][0] == "[]" and "M_MMAP_THRESHOLD" in results["retain"][0]
    assert results["system"][1] > 4000, results  # 38 MB / 4 KiB pages ~ 9,300
    assert results["retain"][1] < results["system"][1] / 4, results


def test_trace_counter_counts_retraces_and_warns():
    import warnings

    import jax.numpy as jnp

    from rdfia_jax import xla

    traces = xla.TraceCounter()
    f = xla.jit(traces.wrap(lambda x: x * 2, "double"))
    f(jnp.ones(3))
    f(jnp.ones(3))
    assert traces["double"] == 1 and traces.check("double")
    f(jnp.ones(4))  # a new shape: one retrace
    assert traces["double"] == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not traces.check("double")
    assert any("traced 2 times" in str(w.message) for w in caught)
