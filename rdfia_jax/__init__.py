"""rdfia-jax: the RDFIA deep-learning practical in pure JAX / Flax NNX."""

__version__ = "0.1.0"
