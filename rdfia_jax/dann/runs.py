"""Training and evaluation of the DANN section's runs (``rdfia-jax dann RUN``).

A run is a name from :mod:`rdfia_jax.dann.catalogue`, a seed and a :class:`~rdfia_jax.dann.config.DannConfig`.
Every run also measures the proxy A-distance of its features (:mod:`rdfia_jax.dann.alignment`: a
fresh linear probe telling source test from target test features apart, no class labels). With a
parameter average (``ema_decay``) a run reports the averaged network and keeps the last iterate's
numbers under ``"last_iterate"``.

Outputs under ``out/<run folder>/seed<k>/``: ``checkpoints/``, ``evals.json`` (the per-epoch
evaluations so far, kept across a kill and ``resume``), ``result.json``, ``history.npz``,
``curves.png``, ``tsne.png``; :func:`run_many` also writes ``out/results.{md,csv,json}``
(:mod:`rdfia_jax.dann.report`).
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax import xla
from rdfia_jax.dann import steps as dsteps
from rdfia_jax.dann.catalogue import RUN_NAMES, RUNS, get_spec  # noqa: F401  (re-exported names)
from rdfia_jax.dann.config import DannConfig, RunPlan, check_seed, plan_run
from rdfia_jax.dann.domains import Domains, Subset, check_domains, image_statistics, load_domains  # noqa: F401
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes, check_writable_dir

SMOKE_TSNE = 150
TSNE_PER_DOMAIN = 1000
EVAL_SUBSET = 2000  # per-epoch evaluation curves use this many test images per domain
EVALS_FILE = "evals.json"


def _tsne_indices(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def _checkpoint_store(plan: RunPlan, keep: int = 3):
    from rdfia_jax.train import checkpoint

    return checkpoint.CheckpointStore(plan.run_dir / "checkpoints", fingerprint=plan.fingerprint, keep=keep,
                                      fingerprint_defaults=plan.fingerprint_defaults)


def evaluate_checkpoint(name: str, seed: int = 0, config: DannConfig = DannConfig(), *, out, domains: Domains,
                        step: int | None = None, params: str = "params", pad: bool = False,
                        block1_impl: str = "s2d") -> dict:
    """Test accuracies of a run's saved checkpoint (default: the latest), e.g. of a run still going.

    The run's config must be the one it was started with (the checkpoint's fingerprint is checked).
    ``params``: which parameters to evaluate, ``"params"`` (the last iterate) or ``"ema_params"``
    (runs with ``ema_decay``). ``pad``: also measure the proxy A-distance of the features
    (:func:`feature_alignment`).

    Returns:
      :func:`rdfia_jax.dann.steps.evaluate`'s dict plus ``"step"`` and ``"total_steps"`` (and
      ``"pad"``, ``"pad_error"``).
    """
    plan = plan_run(name, seed, config, domains, out)
    graphdef, state = dsteps.init_state(seed, plan.step_config, block1_impl=block1_impl)
    if params not in state:
        raise RdfiaError(f"a checkpoint of this run holds no {params!r} (ema_params need --ema-decay)")
    with _checkpoint_store(plan) as store:
        step = store.latest_step() if step is None else step
        if step is None:
            raise RdfiaError(f"no checkpoint yet in {plan.run_dir / 'checkpoints'}")
        state, _ = store.restore(state, step)
    eval_src, eval_tgt = dsteps.make_eval_fns(graphdef, plan.step_config)
    res = dsteps.evaluate(eval_src, state[params], domains.source_test, domains.target_test,
                          target_eval_fn=eval_tgt)
    res.update(step=step, total_steps=plan.step_config.total_steps)
    if pad:
        res.update(feature_alignment(eval_src, eval_tgt, state[params], domains, seed, smoke=config.smoke)[0])
    return res


def feature_alignment(eval_src, eval_tgt, params, domains: Domains, seed: int, *, smoke: bool = False):
    """Features of the t-SNE subsets (1,000 source test + 1,000 target test images) and their proxy
    A-distance.

    Returns:
      ``({"pad": ..., "pad_error": ...}, source_features, target_features)``.
    """
    from rdfia_jax.dann.alignment import proxy_a_distance

    k = SMOKE_TSNE if smoke else TSNE_PER_DOMAIN
    si = _tsne_indices(len(domains.source_test.images), k, seed)
    ti = _tsne_indices(len(domains.target_test.images), k, seed + 1)
    _, _, fs = dsteps.predict(eval_src, params, np.asarray(domains.source_test.images)[si], want_features=True)
    _, _, ft = dsteps.predict(eval_tgt, params, np.asarray(domains.target_test.images)[ti], want_features=True)
    pad = proxy_a_distance(fs, ft, seed=seed)
    return {"pad": pad["pad"], "pad_error": pad["error"]}, fs, ft


class EvalLog:
    """The per-epoch evaluations of one run, rewritten atomically to ``run_dir/evals.json`` after each.

    Why: the evaluations are not in the checkpoints; a run killed and resumed must still report
    (and draw) those it made before the kill.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVALS_FILE
        self.evals: list[dict] = []

    def restore(self, up_to_step: int) -> None:
        """Loads the saved evaluations of steps <= ``up_to_step`` (later ones are redone by the resumed run)."""
        try:
            saved = json.loads(self.path.read_text())["evals"]
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as err:
            raise RdfiaError(f"{self.path} is damaged ({err}); delete it to resume without the "
                             "evaluations made before the interruption") from None
        self.evals = [e for e in saved if e["step"] <= up_to_step]

    def steps(self) -> set[int]:
        return {e["step"] for e in self.evals}

    def add(self, record: dict) -> None:
        self.evals.append(record)
        self.evals.sort(key=lambda e: e["step"])
        atomic_write_bytes(self.path, json.dumps({"evals": self.evals}, indent=1).encode())


def _existing_runs(out: Path, exclude: Path) -> list[str]:
    """``folder/seedN (step k)`` of every run under ``out`` with checkpoints, ``exclude`` left out."""
    found = []
    for ckpt in sorted(out.glob("*/seed*/checkpoints")):
        steps = [int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()]
        if steps and ckpt.parent != exclude:
            found.append(f"{ckpt.parent.parent.name}/{ckpt.parent.name} (step {max(steps)})")
    return found


def _divergence_advice(config: DannConfig, checkpoint_step: int | None) -> str:
    if config.clip_norm is None:
        advice = ("rerun with --clip-norm 3 (gradient clipping; recommended with --lr-per-epoch "
                  "--ema-decay 0.999, benchmarks/RESULTS.md section 3): a new run folder, started fresh")
    else:
        advice = (f"it diverged with --clip-norm {config.clip_norm:g}: rerun with a smaller --clip-norm "
                  "(e.g. 1) or with --lr-per-epoch (a new run folder, started fresh)")
    if checkpoint_step is not None:
        advice += (f". --resume with the same flags would replay the same steps from step {checkpoint_step} "
                   "and diverge again (training is deterministic)")
    return advice


def run_one(name: str, seed: int = 0, config: DannConfig = DannConfig(), *, out, domains: Domains | None = None,
            resume: bool = False, save_every: int = 1000, figures: bool = True, progress: bool = True,
            eval_every_epoch: bool = True, hooks: Sequence = (), block1_impl: str = "s2d") -> dict:
    """Train and evaluate one run; writes its outputs under ``out/<run folder>/seed<seed>/``.

    Args:
      name: a run name (:data:`~rdfia_jax.dann.catalogue.RUN_NAMES`).
      seed: network initialisation and data-order seed (a non-negative int).
      config: the run's options (:class:`~rdfia_jax.dann.config.DannConfig`).
      out: output folder.
      domains: the data (default: :func:`~rdfia_jax.dann.domains.load_domains` of the config's pair).
      resume: continue from the run's latest checkpoint (a run without one starts fresh, and says so).
      save_every: checkpoint period in steps.
      figures: write curves.png and tsne.png.
      progress: report progress (a bar on a terminal, plain lines in a log).
      eval_every_epoch: evaluate on test subsets after every epoch (curves; kept in ``evals.json``).
      hooks: extra :class:`rdfia_jax.train.loop.Hook` callbacks (progress reports, tests).
      block1_impl: the network's first-block implementation (:data:`rdfia_jax.dann.models.BLOCK1_IMPLS`).
    Returns:
      The result dict written to ``result.json``, plus ``"state"``: the final training state.
    """
    from rdfia_jax.train import loop

    get_spec(name)  # unknown run name: fail before loading data
    check_seed(seed)
    if domains is None:
        domains = load_domains(config.dataset_pair, data_dir=config.data_dir, smoke=config.smoke,
                               bsds_dir=config.bsds_dir)
    plan = plan_run(name, seed, config, domains, out)
    spec, cfg, epochs, run_dir, steps_per_epoch = (plan.spec, plan.step_config, plan.epochs, plan.run_dir,
                                                   plan.steps_per_epoch)
    graphdef, state = dsteps.init_state(seed, cfg, block1_impl=block1_impl)
    traces = xla.TraceCounter()
    step = dsteps.make_train_step(graphdef, cfg, jit=False, traces=traces)
    eval_src, eval_tgt = dsteps.make_eval_fns(graphdef, cfg)

    def evaluate(params, source, target) -> dict:
        return dsteps.evaluate(eval_src, params, source, target, target_eval_fn=eval_tgt)

    # The network the run reports: the parameter average when there is one, else the last iterate.
    reported = "ema_params" if cfg.ema_decay > 0 else "params"

    eval_rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    sub = lambda ds: ds if len(ds.images) <= EVAL_SUBSET else Subset(ds, eval_rng.choice(len(ds.images), EVAL_SUBSET, replace=False))  # noqa: E731
    src_eval, tgt_eval = sub(domains.source_test), sub(domains.target_test)
    log = EvalLog(run_dir)

    def epoch_evaluation(steps_done: int, st) -> None:
        res = evaluate(st[reported], src_eval, tgt_eval)
        if reported != "params":
            res["last_iterate"] = evaluate(st["params"], src_eval, tgt_eval)
        res["step"] = steps_done
        log.add(res)

    def on_epoch(steps_done: int, st, history) -> None:
        if (steps_done % steps_per_epoch == 0 or steps_done == cfg.total_steps) and steps_done not in log.steps():
            epoch_evaluation(steps_done, st)

    store = _checkpoint_store(plan, keep=2)
    try:
        latest = store.latest_step()
        if resume and latest is None:
            others = _existing_runs(Path(out), run_dir)
            print(f"--resume: no checkpoint for these settings in {run_dir}; starting fresh"
                  + (f". Runs with checkpoints here: {', '.join(others)} (a run's folder name encodes its "
                     "settings: pass the same flags to resume one)" if others else ""), file=sys.stderr)
        if resume and latest is not None and eval_every_epoch:
            log.restore(latest)
            if latest < cfg.total_steps and latest % steps_per_epoch == 0 and latest not in log.steps():
                # Killed between this checkpoint and its epoch's evaluation: evaluate the checkpoint.
                epoch_evaluation(latest, store.restore(state, latest)[0])
        all_hooks = ([loop.Hook(every=steps_per_epoch, fn=on_epoch)] if eval_every_epoch else []) + list(hooks)
        try:
            result = loop.run(step, state, plan.get_batch, steps_per_epoch=steps_per_epoch, epochs=epochs,
                              store=store, save_every=save_every, resume=resume, hooks=all_hooks,
                              metadata={"run": name, "seed": seed}, progress=progress,
                              desc=f"dann {run_dir.parent.name} seed {seed}")
        except loop.TrainingDiverged as err:
            advice = _divergence_advice(config, store.latest_step())
            raise loop.TrainingDiverged(f"{err}\n{advice}", err.result) from None
    finally:
        store.close()
    if result.steps_run > 0:
        traces.check("train_step")

    params = result.state[reported]
    final = evaluate(params, domains.source_test, domains.target_test)
    alignment, fs, ft = feature_alignment(eval_src, eval_tgt, params, domains, seed, smoke=config.smoke)
    evals = log.evals
    record = {
        "run": name, "seed": seed, "epochs": epochs, "steps": result.steps_done,
        "steps_per_epoch": steps_per_epoch, "gamma": config.gamma, "lr_per_epoch": config.lr_per_epoch,
        "input_norm": config.input_norm,
        "source": domains.source_name, "target": domains.target_name,
        "source_acc": final["source_acc"], "target_acc": final["target_acc"],
        "domain_acc": final["domain_acc"], "domain_acc_source": final["domain_acc_source"],
        "domain_acc_target": final["domain_acc_target"], **alignment,
        "ema_decay": cfg.ema_decay, "clip_norm": cfg.clip_norm,
        "wall_s": result.seconds, "steps_run": result.steps_run,
        "steps_per_s": result.steps_run / result.seconds if result.seconds > 0 else float("nan"),
        "resumed_from": result.resumed_from, "smoke": config.smoke, "about": spec.about,
        "src_batch": spec.src_batch, "tgt_batch": spec.tgt_batch,
        "evals": evals,
    }
    if reported != "params":  # the last iterate's numbers, for the comparison with its average
        last = evaluate(result.state["params"], domains.source_test, domains.target_test)
        last.update(feature_alignment(eval_src, eval_tgt, result.state["params"], domains, seed,
                                      smoke=config.smoke)[0])
        record["last_iterate"] = last
    run_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **result.history)
    atomic_write_bytes(run_dir / "history.npz", buf.getvalue())
    if figures:
        from rdfia_jax.dann import figures as figs

        title = f"{name} (seed {seed}, {epochs} ep): {domains.source_name} {final['source_acc']:.4f}, " \
                f"{domains.target_name} {final['target_acc']:.4f}, domain {final['domain_acc']:.3f}"
        figs.plot_curves(result.history, evals, run_dir / "curves.png", title)
        emb = figs.tsne_embedding(np.concatenate([fs, ft]), seed=seed)
        is_src = np.concatenate([np.ones(len(fs), bool), np.zeros(len(ft), bool)])
        figs.plot_tsne(emb, is_src, run_dir / "tsne.png", f"t-SNE of features: {title}",
                       names=(domains.source_name, domains.target_name))
        record["figures"] = ["curves.png", "tsne.png"]
    atomic_write_bytes(run_dir / "result.json", json.dumps(record, indent=2).encode())
    record["state"] = result.state  # not in result.json: the final params and optimizer state
    return record


def run_many(names: Sequence[str], seeds: Sequence[int], config: DannConfig = DannConfig(), *, out,
             domains: Domains | None = None, **run_kwargs) -> list[dict]:
    """Runs every (name, seed) in turn (arguments checked first), rewriting the results table after each.

    ``run_kwargs`` go to :func:`run_one` (``resume``, ``figures``, ``progress``, ...). Returns the records.
    """
    from rdfia_jax.dann.report import write_table

    for n in names:
        get_spec(n)
    if not seeds:
        raise RdfiaError("give at least one seed, e.g. 0 or 0,1,2")
    for s in seeds:
        check_seed(s)
    check_writable_dir(out)
    if domains is None:
        domains = load_domains(config.dataset_pair, data_dir=config.data_dir, smoke=config.smoke,
                               bsds_dir=config.bsds_dir)
    records = []
    for n in names:
        for s in seeds:
            t0 = time.perf_counter()
            rec = run_one(n, s, config, out=out, domains=domains, **run_kwargs)
            rec["total_s"] = time.perf_counter() - t0
            rec.pop("state", None)  # keep memory flat over many runs
            records.append(rec)
            write_table(out)
    return records
