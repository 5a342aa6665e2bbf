"""Section 4 (DCGAN and conditional DCGAN) through ``rdfia-jax gan`` / ``rdfia-jax cgan``."""

from __future__ import annotations

from pathlib import Path

from rdfia_jax.reproduce.sections.common import SectionResult, cli, read_json, run_flags


def _param_counts() -> dict[str, int]:
    from flax import nnx

    from rdfia_jax.gan import models

    return {"s4.g_params": models.count_params(models.Generator(100, 32, rngs=nnx.Rngs(0))),
            "s4.d_params": models.count_params(models.Discriminator(32, rngs=nnx.Rngs(0))),
            "s4.cg_params": models.count_params(models.CondGenerator(100, rngs=nnx.Rngs(0))),
            "s4.cd_params": models.count_params(models.CondDiscriminator(rngs=nnx.Rngs(0)))}


def _common(b, ctx) -> list[str]:
    return ["--dataset", b.dataset, "--score-samples", b.score_samples, "--seed", 0,
            *run_flags(data_dir=ctx.data_dir, smoke=b.smoke, resume=ctx.resume)]


def run(budget, ctx) -> dict:
    b = budget.s4
    out: Path = ctx.out
    res = SectionResult(seeds=[0])
    for key, n in _param_counts().items():
        res.measure(key, n, note="counted from the JAX modules")
    real = b.dataset == "mnist"
    res.notes.append("data: MNIST train (60,000)" if real else
                     "data: the embedded scikit-learn digits (1,438 training images, 8x8 upsampled), NOT MNIST")
    if b.smoke:
        res.notes.append("smoke run (the gan command's --smoke: 256 images, 1 epoch): numbers meaningless")
    steps_per_epoch = max(1, (256 if b.smoke else (60_000 if real else 1438)) // (32 if b.smoke else b.batch_size))
    every = max(1, steps_per_epoch * b.epochs // 4)
    cli(["gan", "--out", out / "dcgan", "--epochs", b.epochs, "--batch-size", b.batch_size,
         "--sample-every", every, "--save-every", max(every, 100), *_common(b, ctx)])
    s = read_json(out / "dcgan" / "summary.json")
    sc = s.get("score") or {}
    what = f"{s['steps']} iterations ({b.epochs} epochs, batch {s['config']['batch_size']})"
    if sc:
        prefix = "s4.dcgan" if real else "s4.digits"
        res.measure(f"{prefix}_confidence", sc["confidence"], note=f"{sc['n']} samples; {what}", epochs=b.epochs)
        res.measure(f"{prefix}_coverage", sc["coverage"], note=f"{sc['n']} samples; {what}", epochs=b.epochs)
        res.add("DCGAN: Frechet distance in the classifier's feature space", sc["frechet"],
                f"real digits: {s['score_real']['frechet']:.3f}")
        res.add("real digits (ceiling): confidence / coverage",
                f"{s['score_real']['confidence']:.3f} / {s['score_real']['coverage']:.3f}", s.get("score_description", ""))
    res.add("DCGAN: iterations per second", s.get("steps_per_s"), what)
    d = out / "dcgan"
    res.figure("Figure 38", "DCGAN losses of D and G", d / "losses.png", out)
    grids = sorted((d / "samples").glob("step_*.png"))
    if grids:
        res.figure("Figure 39", f"samples from a fixed z early in training ({grids[0].stem})", grids[0], out)
    res.figure("Figure 40", f"samples after {what}", d / "samples_final.png", out)
    res.figure("(extra)", "real training digits, for comparison", d / "real.png", out)
    res.figure("(extra)", "latent interpolation between fixed z", d / "interpolation.png", out)
    if b.sweeps:
        # The sweep's default run is the DCGAN run above: "variants" does not train it a second time.
        cli(["gan", "--sweep", "variants", "--out", out / "sweeps", "--epochs", b.epochs, "--batch-size", b.batch_size,
             *_common(b, ctx)])
        figs = {"nz10": "Figures 41-42", "nz1000": "Figures 43-44", "epochs30": "Figures 45-46",
                "lr_x100": "Figures 47-48", "lr_div100": "Figures 49-50", "ngf256": "Figures 51-52"}
        for name, fig in figs.items():
            run_dir = out / "sweeps" / name
            summary = read_json(run_dir / "summary.json")
            sc = summary.get("score") or {}
            res.add(f"sweep {name}: status, confidence / coverage",
                    f"{summary['status']}" + (f", {sc['confidence']:.3f} / {sc['coverage']:.3f}" if sc else ""))
            if (run_dir / "samples_final.png").is_file():
                res.figure(fig, f"sweep {name}: final samples", run_dir / "samples_final.png", out)
            res.figure(fig, f"sweep {name}: losses", run_dir / "losses.png", out)
    if b.cgan_epochs:
        cli(["cgan", "--out", out / "cgan", "--epochs", b.cgan_epochs, "--batch-size", b.batch_size,
             *_common(b, ctx)])
        s = read_json(out / "cgan" / "summary.json")
        sc = s.get("score") or {}
        if sc and real:
            res.measure("s4.cgan_label_acc", sc["label_accuracy"], note=f"{sc['n']} samples, {s['steps']} iterations",
                        epochs=b.cgan_epochs)
        elif sc:
            res.add("cDCGAN on the digits: label accuracy", sc["label_accuracy"], f"{sc['n']} samples")
        res.figure("Figures 53, 55", "cDCGAN losses", out / "cgan" / "losses.png", out)
        res.figure("Figures 54, 56", "cDCGAN: fixed z (columns) x the 10 classes (rows)",
                   out / "cgan" / "class_grid.png", out)
    return res.to_dict()
