"""Data parallelism over all local devices with ``jax.jit`` + ``NamedSharding`` (no pmap).

Parameters and optimizer state are replicated, batches are split along their leading axis over a
1-D ``("batch",)`` mesh, and XLA's SPMD partitioner inserts the gradient all-reduce. The same code
runs on one CPU, several GPUs or a TPU host; on one device every helper is a no-op placement.

Multi-host: call ``jax.distributed.initialize()`` (coordinator address, process count and id from
the cluster environment) in every process before anything else; :func:`data_mesh` then spans
``jax.devices()`` (all hosts) and each process feeds its own slice of the global batch through
``jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rdfia_jax.errors import RdfiaError


@functools.lru_cache(maxsize=None)
def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over the first ``num_devices`` devices (default: all)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise RdfiaError(f"asked for {num_devices} devices, {len(devices)} available")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), ("batch",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every leaf of ``batch`` along axis 0 over the mesh (its size must divide evenly)."""
    n = mesh.devices.size
    for leaf in jax.tree.leaves(batch):
        if np.shape(leaf)[0] % n:
            raise RdfiaError(f"batch of {np.shape(leaf)[0]} cannot be split evenly over {n} devices; "
                             f"use a batch size divisible by {n} (or pad it with pad_to_multiple)")
    return jax.device_put(batch, batch_sharding(mesh))


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a ragged batch along axis 0 to a multiple; returns (padded, mask of real rows)."""
    n = len(x)
    target = -(-n // multiple) * multiple
    mask = np.zeros(target, bool)
    mask[:n] = True
    if target == n:
        return x, mask
    pad = np.zeros((target - n,) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad]), mask
