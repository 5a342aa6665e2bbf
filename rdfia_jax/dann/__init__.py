"""Domain adaptation MNIST -> MNIST-M (report section 3): DANN, its variants and pseudo-labelling.

* :mod:`rdfia_jax.dann.grl` -- the gradient reversal layer (``jax.custom_vjp``);
* :mod:`rdfia_jax.dann.models` -- the practical's networks (Flax NNX, NHWC);
* :mod:`rdfia_jax.dann.steps` -- schedules, losses, the jitted training step, evaluation;
* :mod:`rdfia_jax.dann.runs` -- the runs (``rdfia-jax dann RUN``), checkpoints, results table;
* :mod:`rdfia_jax.dann.figures` -- t-SNE and training curves.
"""

from rdfia_jax.dann.grl import grad_reverse

__all__ = ["grad_reverse"]
