"""Shared training infrastructure: the generic loop, orbax checkpoints and optax helpers (every section)."""
