"""Domain adaptation MNIST -> MNIST-M (report section 3): DANN, its variants and pseudo-labelling.

* :mod:`rdfia_jax.dann.grl` -- the gradient reversal layer (``jax.custom_vjp``);
* :mod:`rdfia_jax.dann.models` -- the practical's networks (Flax NNX, NHWC);
* :mod:`rdfia_jax.dann.steps` -- schedules, losses, the jitted training step, evaluation;
* :mod:`rdfia_jax.dann.catalogue` -- the named runs (objective, GRL factor, batches, epochs);
* :mod:`rdfia_jax.dann.domains` -- source/target data, its checks, statistics and batches;
* :mod:`rdfia_jax.dann.config` -- a run's options (the frozen ``DannConfig``) and what a run derives from them;
* :mod:`rdfia_jax.dann.runs` -- training and evaluation of a run (``rdfia-jax dann RUN``), checkpoints, resume;
* :mod:`rdfia_jax.dann.report` -- the results table over seeds;
* :mod:`rdfia_jax.dann.figures` -- t-SNE and training curves.
"""

from rdfia_jax.dann.grl import grad_reverse

__all__ = ["grad_reverse"]
