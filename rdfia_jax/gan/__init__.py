"""Report section 4: DCGAN and conditional DCGAN (MNIST, or the embedded digits by default).

Modules: :mod:`~rdfia_jax.gan.config` (run options, checked without JAX), :mod:`~rdfia_jax.gan.models`
(networks), :mod:`~rdfia_jax.gan.ops` (stride-1 reformulations of the strided convolutions),
:mod:`~rdfia_jax.gan.steps` (state, jitted training step, sampling), :mod:`~rdfia_jax.gan.run` (one
run end to end), :mod:`~rdfia_jax.gan.sweeps` (the report's experiments), :mod:`~rdfia_jax.gan.score`
(classifier-based score), :mod:`~rdfia_jax.gan.figures`.
"""
