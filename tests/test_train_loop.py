"""The shared training loop and checkpoint helper: exact resume, divergence stop, architecture check."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rdfia_jax.errors import RdfiaError
from rdfia_jax import progress
from rdfia_jax.train import checkpoint, loop

N, BS, FEATURES = 40, 8, 3


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.1).astype(np.float32)
    return x, y


def _get_batch(epoch, index):
    x, y = _data()
    order = np.random.default_rng(1000 + epoch).permutation(N)
    idx = order[index * BS:(index + 1) * BS]
    return {"x": x[idx], "y": y[idx]}


def _setup(width=1, poison_at=None):
    """A tiny Linear regression trained with Adam and per-step noise from the state's key."""
    model = nnx.Linear(FEATURES, width, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(0.05)
    state = {"params": params, "opt": tx.init(params), "key": jax.random.key(7)}
    traces = []

    def step(state, batch, step_index):
        traces.append(1)
        noise_key = jax.random.fold_in(state["key"], step_index)

        def loss_fn(params):
            pred = nnx.merge(graphdef, params)(batch["x"])[:, 0]
            noise = 0.01 * jax.random.normal(noise_key, pred.shape)
            return jnp.mean((pred + noise - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        if poison_at is not None:
            loss = jnp.where(step_index == jnp.int32(poison_at), jnp.float32(jnp.nan), loss)
        params, opt = loop.apply_optimizer(tx, grads, state["opt"], state["params"])
        return {"params": params, "opt": opt, "key": state["key"]}, {"loss": loss}

    return state, step, traces


def _leaves_equal(a, b):
    la = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: np.asarray(jax.random.key_data(x)) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x), a))
    lb = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: np.asarray(jax.random.key_data(x)) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x), b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_loop_learns_and_traces_once():
    state, step, traces = _setup()
    result = loop.run(step, state, _get_batch, steps_per_epoch=N // BS, epochs=6, progress=False)
    loss = result.history["loss"]
    assert loss.shape == (30,) and loss[-5:].mean() < 0.2 * loss[:5].mean()
    assert len(traces) == 1, "the step was retraced"
    assert result.steps_done == 30 and not result.diverged


class _Killed(Exception):
    pass


def test_kill_and_resume_gives_identical_parameters(tmp_path):
    spe, epochs = N // BS, 3
    state, step, _ = _setup()
    reference = loop.run(step, state, _get_batch, steps_per_epoch=spe, epochs=epochs, progress=False)

    def kill(steps_done, state, history):
        if steps_done == 7:
            raise _Killed

    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"}, keep=2)
    state, step, _ = _setup()
    with pytest.raises(_Killed):  # killed mid-epoch, one step after the save at step 6
        loop.run(step, state, _get_batch, steps_per_epoch=spe, epochs=epochs, store=store,
                 save_every=3, hooks=[loop.Hook(every=1, fn=kill)], progress=False)
    assert store.latest_step() == 6
    state, step, _ = _setup()  # a fresh process: new state, resumes from step 6
    resumed = loop.run(step, state, _get_batch, steps_per_epoch=spe, epochs=epochs, store=store,
                       save_every=3, resume=True, progress=False)
    assert resumed.resumed_from == 6 and resumed.steps_run == 15 - 6
    assert _leaves_equal(resumed.state, reference.state)
    np.testing.assert_array_equal(resumed.history["loss"], reference.history["loss"])
    assert store.all_steps() == [12, 15]  # keep=2


def test_existing_checkpoints_without_resume_and_other_architecture(tmp_path):
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    state, step, _ = _setup()
    loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, store=store, progress=False)
    with pytest.raises(RdfiaError, match="already holds checkpoints"):
        loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, store=store, progress=False)
    wide_state, wide_step, _ = _setup(width=2)
    with pytest.raises(RdfiaError, match="different architecture"):
        loop.run(wide_step, wide_state, _get_batch, steps_per_epoch=5, epochs=1, store=store, resume=True, progress=False)
    other = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "other"})
    with pytest.raises(RdfiaError, match="another configuration"):
        other.restore(state)


def test_fingerprint_entries_added_later_match_at_their_default(tmp_path):
    """A checkpoint written before an option existed restores under a fingerprint that holds the
    option at its default ("off") value, and only then."""
    state, step, _ = _setup()
    old = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 1}})
    trained = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, store=old, progress=False).state
    defaults = {"config": {"ema": 0.0, "norm": None}}
    new = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 1, "ema": 0.0, "norm": None}},
                                     fingerprint_defaults=defaults)
    restored, _ = new.restore(state)
    assert _leaves_equal(restored, trained)
    on = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 1, "ema": 0.9, "norm": None}},
                                    fingerprint_defaults=defaults)
    with pytest.raises(RdfiaError, match="another configuration"):
        on.restore(state)
    strict = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 1, "ema": 0.0, "norm": None}})
    with pytest.raises(RdfiaError, match="another configuration"):
        strict.restore(state)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    state, step, _ = _setup(poison_at=7)
    with pytest.raises(loop.TrainingDiverged, match="diverged at step 7") as info:
        loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store, save_every=3, progress=False)
    result = info.value.result
    assert result.diverged and result.steps_done == 7 and len(result.history["loss"]) == 7
    assert store.latest_step() == 6
    restored, meta = store.restore(state)
    assert loop.all_finite(restored) and len(meta["history"]["loss"]) == 6
    state, step, _ = _setup(poison_at=2)
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, on_divergence="return", progress=False)
    assert result.diverged and "step 2" in result.message


def test_checkpoint_round_trip_keys_and_optimizer(tmp_path):
    state, _, _ = _setup()
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=["x", 1])
    store.save(5, state, {"note": "hi"})
    restored, meta = store.restore(state)
    assert meta == {"note": "hi"}
    assert _leaves_equal(restored, state)
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    with pytest.raises(RdfiaError, match="no checkpoint for step 4"):
        store.restore(state, step=4)


def test_progress_without_a_terminal_prints_plain_lines(capsys, monkeypatch):
    # Under pytest stderr is not a terminal: a background run logging to a file sees plain lines
    # (every 5 %; the 10-second spacing between lines is dropped for this fast toy run).
    monkeypatch.setattr(progress, "PLAIN_MIN_SECONDS", 0.0)
    state, step, _ = _setup()
    loop.run(step, state, _get_batch, steps_per_epoch=N // BS, epochs=8, progress=True, desc="toy")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("toy: ")]
    total = 8 * (N // BS)  # 40 steps: one line every 2 (5 %)
    assert len(lines) == 20
    assert lines[0].startswith(f"toy: 2/{total} steps (5 %)")
    assert lines[-1].startswith(f"toy: {total}/{total} steps (100 %)")
    assert "steps/s" in lines[-1] and "eta 0 s" in lines[-1]
    assert "loss" in lines[-1]  # the latest metrics ride along
