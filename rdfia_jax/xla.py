"""``jax.jit`` with the compile options that make the library's hot paths fast on CPU.

XLA:CPU compiles convolutions to its own (Eigen) kernels by default; recent XLA releases can hand
dots and convolutions to YNNPACK instead (``xla_cpu_experimental_ynn_fusion_type``), several times
faster on small convolutions and their gradients (measurements: ``benchmarks/RESULTS.md``). The
option is experimental and not in every jaxlib, so it is *probed* once per process and used only
when the default backend is the CPU; anywhere else :func:`jit` is exactly ``jax.jit``.
``RDFIA_JAX_CPU_KERNELS=xla`` keeps XLA's default kernels.

Per-function compile options rather than ``XLA_FLAGS``: an unknown flag in ``XLA_FLAGS`` aborts the
process and must be set before JAX starts; a per-compilation option fails softly (the probe catches
it) and touches only the functions the library compiles.

:func:`retain_host_memory` (glibc ``mallopt``) stops XLA:CPU's per-execution temporaries from being
unmapped and faulted back in every step. It changes process-wide state, so only the CLI entry point
applies it; API users who want it call it themselves before their first JAX operation.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import os
import sys
import warnings
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


MALLOC_ENV_VAR = "RDFIA_JAX_HOST_MALLOC"
# glibc's mallopt parameters (malloc.h) and the values set: one arena (a thread arena's heap is at
# most 64 MB, so larger blocks would be mmap'ed whatever the threshold), blocks below 1 GiB from the
# heap (glibc's own threshold moves up to 32 MB at most), the heap never trimmed, grown 64 MB at a time.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
HOST_MALLOC_SETTINGS = {"M_ARENA_MAX": (_M_ARENA_MAX, 1),
                        "M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, 1 << 30),
                        "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, 2**31 - 1),
                        "M_TOP_PAD": (_M_TOP_PAD, 64 << 20)}


@functools.cache
def retain_host_memory() -> dict[str, int]:
    """Asks glibc's ``malloc`` to keep large freed blocks for reuse (once per process).

    XLA:CPU takes each execution's temporaries as one large ``malloc`` block on a runtime thread;
    glibc serves such blocks with ``mmap`` and unmaps them at ``free``, so every step faults them
    back in as fresh pages. These settings (:data:`HOST_MALLOC_SETTINGS`: one arena, blocks below
    1 GiB from the heap, no trimming) keep them; the process then holds its peak host memory.
    A process-wide change: the ``rdfia-jax`` CLI applies it at its start; library users call it
    first thing (the one-arena setting reaches only threads that have not allocated yet). No library
    function calls it. ``RDFIA_JAX_HOST_MALLOC=system`` makes it a no-op. Page-fault counts and step
    times: ``benchmarks/RESULTS.md``.

    Returns:
      The ``mallopt`` settings applied (name -> value); empty when ``RDFIA_JAX_HOST_MALLOC=system``,
      off Linux/glibc, or when glibc refuses a setting (then nothing is claimed for it).
    """
    choice = os.environ.get(MALLOC_ENV_VAR, "retain").strip().lower()
    if choice not in ("retain", "system"):
        raise ValueError(f"{MALLOC_ENV_VAR} must be 'retain' or 'system', got {choice!r}")
    if choice == "system" or not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return {name: value for name, (param, value) in HOST_MALLOC_SETTINGS.items() if mallopt(param, value) == 1}


class _LazyJit:
    """A ``jax.jit`` wrapper that builds the jitted function at its first use.

    Deciding the compile options at first call (not at import) keeps ``import rdfia_jax`` from
    starting a JAX backend, so users can still pick platforms or devices after importing.
    """

    def __init__(self, fun: Callable, jit_kwargs: dict[str, Any], tuned_kernels: bool = True):
        functools.update_wrapper(self, fun)
        self._fun = fun
        self._jit_kwargs = jit_kwargs
        self._tuned_kernels = tuned_kernels
        self._jitted: Callable | None = None

    def _get(self) -> Callable:
        if self._jitted is None:
            options = compiler_options() if self._tuned_kernels else None
            self._jitted = jax.jit(self._fun, compiler_options=options, **self._jit_kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name: str):  # lower, trace, eval_shape, ... of the jitted function
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun: Callable | None = None, *, tuned_kernels: bool = True, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` plus :func:`compiler_options`; usable as a decorator.

    Args:
      fun: the function to compile (omit to use ``@jit(static_argnums=...)`` as a decorator).
      tuned_kernels: False compiles with XLA's default CPU kernels, for programs that run faster
        without the YNNPACK fusions (:func:`rdfia_jax.models.cpu_tuned_kernels`).
      **jit_kwargs: passed to ``jax.jit`` (``static_argnums``, ``in_shardings``, ``donate_argnums`` ...).
    Returns:
      A callable with ``jax.jit``'s semantics (one compilation per static configuration).
    """
    if fun is None:
        return functools.partial(jit, tuned_kernels=tuned_kernels, **jit_kwargs)
    return _LazyJit(fun, jit_kwargs, tuned_kernels)


class TraceCounter:
    """Counts the traces of the functions it wraps; the one way to check that a hot path compiles once.

    A Python side effect inside a jitted function runs only while JAX traces it, so counting calls of
    the wrapped Python function counts compilations (retraces), per name.

    Example::

        traces = TraceCounter()
        step = xla.jit(traces.wrap(step_fn, "train_step"))
        ...
        traces.check("train_step")   # warns (does not raise) if it was traced more than once
    """

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()

    def wrap(self, fn: Callable, name: str | None = None) -> Callable:
        """``fn`` counted under ``name`` (default: its ``__name__``) each time it is traced."""
        key = name or getattr(fn, "__name__", "fn")

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            self.counts[key] += 1
            return fn(*args, **kwargs)

        return counted

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def check(self, name: str, expected: int = 1) -> bool:
        """False (and a ``RuntimeWarning``) when ``name`` was traced more than ``expected`` times."""
        if self.counts[name] > expected:
            warnings.warn(f"{name} was traced {self.counts[name]} times (expected {expected}): every extra "
                          "trace is a recompilation; please report it", RuntimeWarning, stacklevel=2)
            return False
        return True
