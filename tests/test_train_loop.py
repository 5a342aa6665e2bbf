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


# ------------------------------------------------------------------------- damaged checkpoints (issue 22)

def _array_files(step_dir):
    """The orbax/tensorstore data files of a step folder (OCDBT chunk files under ``arrays/``)."""
    return [p for p in (step_dir / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]


def _flip(path, n):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 - n // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("n_bytes", [1, 4096])
def test_flipped_bytes_in_a_checkpoint_are_detected(tmp_path, n_bytes):
    """One flipped byte in random (incompressible) data decodes to other numbers: the checksum catches
    it; 4 KB flipped make tensorstore's decompression fail: still an RdfiaError naming the step."""
    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(20000,)).astype(np.float32), "b": np.ones(3, np.float32)}
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    store.save(3, state, {"epoch": 1})
    store.save(6, state, {"epoch": 2})
    big = max(_array_files(tmp_path / "ck" / "6"), key=lambda p: p.stat().st_size)
    size = big.stat().st_size
    assert size > 3 * 4096
    _flip(big, n_bytes)
    assert big.stat().st_size == size
    step_dir = tmp_path / "ck" / "6"
    with pytest.raises(RdfiaError) as info:
        store.restore(state)
    msg = str(info.value)
    assert f"checkpoint {step_dir} is damaged" in msg
    assert f"delete {step_dir} to resume from step 3" in msg
    if n_bytes == 1:
        assert "checksum mismatch in array ['w']" in msg
    restored, meta = store.restore(state, step=3)  # the way back works
    assert meta == {"epoch": 1} and np.array_equal(np.asarray(restored["w"]), state["w"])


def test_damage_with_no_older_checkpoint_says_so(tmp_path):
    state = {"w": np.random.default_rng(1).normal(size=(5000,)).astype(np.float32)}
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    store.save(4, state)
    _flip(max(_array_files(tmp_path / "ck" / "4"), key=lambda p: p.stat().st_size), 1)
    with pytest.raises(RdfiaError, match="no earlier checkpoint exists: delete .*4 to start over"):
        store.restore(state)


@pytest.mark.parametrize("damage", ["missing", "empty", "garbled"])
def test_missing_or_broken_metadata_is_a_clear_error(tmp_path, damage):
    state = {"w": np.arange(6, dtype=np.float32)}
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    store.save(2, state)
    store.save(5, state)
    meta_file = tmp_path / "ck" / "5" / "meta" / "metadata"
    if damage == "missing":
        meta_file.unlink()
    elif damage == "empty":
        meta_file.write_text("")
    else:
        meta_file.write_text(meta_file.read_text()[:30])
    word = {"missing": "is missing", "empty": "is empty", "garbled": "is not valid JSON"}[damage]
    for call in (lambda: store.restore(state), lambda: store.read_metadata()):
        with pytest.raises(RdfiaError, match=rf"checkpoint metadata {meta_file} {word}") as info:
            call()
        assert f"delete {tmp_path / 'ck' / '5'} to resume from step 2" in str(info.value)


def test_fingerprint_mismatch_names_only_the_differing_keys(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32)}
    fp = {"model": "tiny", "gan": {"lr_d": 0.0002, "lr_g": 0.0002, "nz": 100}, "seed": 0}
    checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=fp).save(1, state, {"a": 1})
    other = {"model": "tiny", "gan": {"lr_d": 2e-05, "lr_g": 0.0002, "nz": 64}, "seed": 0}
    with pytest.raises(RdfiaError) as info:
        checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=other).restore(state)
    msg = str(info.value)
    assert "another configuration (gan.lr_d 0.0002 -> 2e-05, gan.nz 100 -> 64)" in msg
    assert "lr_g" not in msg and "model" not in msg and "'" not in msg.split("configuration")[1]
    # only gan.lr_d may change: gan.nz still refused, and named alone
    with pytest.raises(RdfiaError, match=r"\(gan.nz 100 -> 64\)"):
        checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=other, may_change=("gan.lr_d",)).restore(state)
    lower = dict(fp, gan=dict(fp["gan"], lr_d=2e-05))
    allowed = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=lower, may_change=("gan.lr_d", "gan.lr_g"))
    _, meta = allowed.restore(state)
    assert meta == {"a": 1, "fingerprint_changes": {"gan.lr_d": [0.0002, 2e-05]}}
    same = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=fp, may_change=("gan.lr_d",))
    assert same.restore(state)[1]["fingerprint_changes"] == {}
    # a key added or removed is named too
    with pytest.raises(RdfiaError, match=r"\(extra \(absent\) -> 1\)"):
        checkpoint.CheckpointStore(tmp_path / "ck", fingerprint=dict(fp, extra=1)).restore(state)


def _lr_setup(lr):
    """_setup's regression with the learning rate as a configuration entry."""
    model = nnx.Linear(FEATURES, 1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(lr)

    def step(state, batch, step_index):
        def loss_fn(params):
            return jnp.mean((nnx.merge(graphdef, params)(batch["x"])[:, 0] - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        params, opt = loop.apply_optimizer(tx, grads, state["opt"], state["params"])
        return {"params": params, "opt": opt}, {"loss": loss}

    return {"params": params, "opt": tx.init(params)}, step


def test_resume_with_an_allowed_change_is_printed_and_recorded(tmp_path, capsys):
    state, step = _lr_setup(0.05)
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 0.05}})
    loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, store=store, progress=False)
    state, step = _lr_setup(0.01)
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny", "config": {"lr": 0.01}},
                                       may_change=("config.lr",))
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store, resume=True,
                      save_every=2, progress=False)
    assert "resuming from step 5 of 10; changed: config.lr 0.05 -> 0.01" in capsys.readouterr().err
    change = {"step": 5, "key": "config.lr", "old": 0.05, "new": 0.01}
    assert result.changes == [change] and result.resumed_from == 5 and result.steps_done == 10
    for s in store.all_steps():  # every later checkpoint records it
        assert store.read_metadata(s)["user"]["changes"] == [change]
    # a further resume (same settings) keeps the record
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=3, store=store, resume=True, progress=False)
    assert "resuming from step 10 of 15" in capsys.readouterr().err
    assert result.changes == [change] and store.read_metadata(15)["user"]["changes"] == [change]


def test_resume_asking_for_fewer_steps_is_refused_before_any_work(tmp_path):
    state, step, traces = _setup()
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=4, store=store, progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ck").rglob("*")}
    calls = []
    hook = loop.Hook(every=1, fn=lambda *a: calls.append(a))
    state, step, traces = _setup()
    with pytest.raises(RdfiaError, match=r"checkpoint .* is at step 20 \(epoch 4\); this run asks for 2 epochs = "
                                         r"10 steps: pass --epochs 4 or more"):
        loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store, resume=True,
                 hooks=[hook], progress=False)
    assert not traces and not calls  # nothing compiled, no hook ran
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ck").rglob("*")} == before


def test_resume_of_a_finished_run_returns_it_without_training(tmp_path, capsys):
    state, step, _ = _setup()
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    done = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store, progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ck").rglob("*")}
    calls = []
    state, step, traces = _setup()
    again = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store, resume=True,
                     hooks=[loop.Hook(every=3, fn=lambda n, st, h: calls.append((n, len(h["loss"]))))],
                     progress=False)
    assert "resuming from step 10 of 10 (already finished: nothing to train)" in capsys.readouterr().err
    assert not traces and again.steps_run == 0 and again.steps_done == 10 and again.resumed_from == 10
    assert _leaves_equal(again.state, done.state)
    np.testing.assert_array_equal(again.history["loss"], done.history["loss"])
    assert calls == [(10, 10)]  # the final hooks see the finished run
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ck").rglob("*")} == before  # nothing rewritten


def test_divergence_message_states_facts_only(tmp_path):
    state, step, _ = _setup(poison_at=2)
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, on_divergence="return", progress=False)
    assert result.message == "training diverged at step 2 (epoch 0, batch 2): loss=nan; no checkpoint was written"
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    state, step, _ = _setup(poison_at=2)
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=1, store=store, on_divergence="return",
                      progress=False)
    assert result.message.endswith("; no checkpoint was written")  # an empty store: none either
    state, step, _ = _setup(poison_at=8)
    store2 = checkpoint.CheckpointStore(tmp_path / "ck2", fingerprint={"model": "tiny"})
    result = loop.run(step, state, _get_batch, steps_per_epoch=5, epochs=2, store=store2, save_every=5,
                      on_divergence="return", progress=False)
    assert result.message == (f"training diverged at step 8 (epoch 1, batch 3): loss=nan; last good checkpoint: "
                               f"step 5 in {tmp_path / 'ck2'}")
    assert "--resume" not in result.message and "learning rate" not in result.message


def test_checkpoints_written_before_checksums_still_restore(tmp_path):
    """A format-1 checkpoint (no checksums in its metadata) restores as before, unchecked."""
    import json

    state = {"w": np.arange(6, dtype=np.float32)}
    store = checkpoint.CheckpointStore(tmp_path / "ck", fingerprint={"model": "tiny"})
    store.save(1, state, {"a": 1})
    meta_file = tmp_path / "ck" / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert len(meta.pop("checksums")) == 1
    meta_file.write_text(json.dumps(dict(meta, format_version=1)))
    restored, user = store.restore(state)
    assert user == {"a": 1} and np.array_equal(np.asarray(restored["w"]), state["w"])
