"""Data parallelism: training sharded over several (forced host CPU) devices equals one device."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rdfia_jax import parallel
from rdfia_jax.errors import RdfiaError

_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    assert jax.local_device_count() == 4, jax.devices()
    from rdfia_jax.gan import steps
    from rdfia_jax.train import loop
    cfg = steps.GanConfig(nz=8, ngf=4, ndf=4, batch_size=8, epochs=1, seed=3)
    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 1), dtype=np.uint8)
    get_batch, spe = loop.array_batches({"x": images}, cfg.batch_size, cfg.seed)
    out = {}
    for dp in (False, True):
        parts, state = steps.build(cfg)
        res = loop.run(steps.make_train_step(parts), state, get_batch, steps_per_epoch=spe, epochs=1,
                       progress=False, data_parallel=dp)
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(res.state)
                  if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
        if dp:
            shardings = {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(res.state)
                         if hasattr(x, "sharding") and hasattr(x.sharding, "spec")}
            out["n_devices"] = len(jax.tree_util.tree_leaves(res.state)[0].sharding.device_set)
        out[str(dp)] = [l.tolist() for l in leaves]
        out["loss_" + str(dp)] = res.history["loss_g"].tolist()
    np.savez(sys.argv[1], **{k: np.asarray(v, dtype=object) for k, v in out.items()})
""")


@pytest.mark.slow
def test_gan_training_sharded_over_4_devices_equals_one_device(tmp_path):
    out = tmp_path / "res.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = np.load(out, allow_pickle=True)  # our own file, written just above
    assert int(res["n_devices"]) == 4
    np.testing.assert_allclose(np.asarray(res["loss_True"], float), np.asarray(res["loss_False"], float),
                               rtol=1e-4, atol=1e-5)
    for a, b in zip(res["True"], res["False"]):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-4, atol=1e-5)


def test_shard_batch_rejects_uneven_split_and_pad_to_multiple_masks():
    mesh = parallel.data_mesh(1)
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert parallel.shard_batch({"x": x}, mesh)["x"].shape == (5, 2)
    padded, mask = parallel.pad_to_multiple(x, 4)
    assert padded.shape == (8, 2) and mask.tolist() == [True] * 5 + [False] * 3
    np.testing.assert_array_equal(padded[:5], x)
    with pytest.raises(RdfiaError, match="asked for 3 devices"):
        parallel.data_mesh(3)
