"""``jax.jit`` with the compile options that make the library's hot paths fast on CPU.

XLA:CPU compiles convolutions to its own (Eigen) kernels by default. Recent XLA releases can hand
dots and convolutions to YNNPACK instead (``xla_cpu_experimental_ynn_fusion_type``), which on the
2-core AVX-512 machine we measured is 2-4x faster on small convolutions and their gradients
(DANN's 5x5 convolution block: 212 -> 60 ms forward + backward at batch 128; the whole DANN step
209 -> 112 ms; see ``benchmarks/RESULTS.md``). The option is experimental and not every jaxlib
has it, so it is *probed* once per process with a tiny compilation and used only when the default
backend is the CPU and the probe compiles; anywhere else :func:`jit` is exactly ``jax.jit``.

Why per-function compile options rather than ``XLA_FLAGS``: an unknown flag in ``XLA_FLAGS``
aborts the whole process (a fatal check in flag parsing), and the variable must be set before JAX
starts its backend; a per-compilation option fails softly (the probe catches it) and touches only
the functions the library compiles.

Set ``RDFIA_JAX_CPU_KERNELS=xla`` to keep XLA's default kernels (e.g. to compare, or should a
jaxlib's YNNPACK path misbehave).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

ENV_VAR = "RDFIA_JAX_CPU_KERNELS"
# The enum value as the compile-options proto spells it (XLA_FLAGS accepts the short "dot").
YNN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """The compile options :func:`jit` passes to ``jax.jit`` in this process (``None``: none).

    Returns:
      ``YNN_OPTIONS`` when the default backend is the CPU, ``RDFIA_JAX_CPU_KERNELS`` is not ``xla``
      and this jaxlib compiles a probe with them; otherwise ``None``.
    """
    choice = os.environ.get(ENV_VAR, "ynn").strip().lower()
    if choice not in ("ynn", "xla"):
        raise ValueError(f"{ENV_VAR} must be 'ynn' or 'xla', got {choice!r}")
    if choice == "xla" or jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=YNN_OPTIONS).lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # an older/newer jaxlib without the option: keep XLA's own kernels
        return None
    return dict(YNN_OPTIONS)


class _LazyJit:
    """A ``jax.jit`` wrapper that builds the jitted function at its first use.

    Deciding the compile options at first call (not at import) keeps ``import rdfia_jax`` from
    starting a JAX backend, so users can still pick platforms or devices after importing.
    """

    def __init__(self, fun: Callable, jit_kwargs: dict[str, Any]):
        functools.update_wrapper(self, fun)
        self._fun = fun
        self._jit_kwargs = jit_kwargs
        self._jitted: Callable | None = None

    def _get(self) -> Callable:
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(), **self._jit_kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name: str):  # lower, trace, eval_shape, ... of the jitted function
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun: Callable | None = None, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` plus :func:`compiler_options`; usable as a decorator.

    Args:
      fun: the function to compile (omit to use ``@jit(static_argnums=...)`` as a decorator).
      **jit_kwargs: passed to ``jax.jit`` (``static_argnums``, ``in_shardings``, ``donate_argnums`` ...).
    Returns:
      A callable with ``jax.jit``'s semantics (one compilation per static configuration).
    """
    if fun is None:
        return functools.partial(jit, **jit_kwargs)
    return _LazyJit(fun, jit_kwargs)
