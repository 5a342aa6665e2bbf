"""Section 3 (domain adaptation, DANN) through ``rdfia-jax dann``."""

from __future__ import annotations

from pathlib import Path

from rdfia_jax.errors import RdfiaError
from rdfia_jax.reproduce.sections.common import SectionResult, cli, read_json, run_flags

_FIGS = {"source-only": ("Figures 33, 35", "without domain adaptation (source only)"),
         "dann": ("Figures 32, 36", "with domain adaptation (DANN, GRL factor -lambda(p))"),
         "dann-positive": ("Figure 34", "positive GRL factor"),
         "dann-const-0.1": ("Figure 37", "constant GRL factor -0.1"),
         "dann-const-1": ("(extra)", "constant GRL factor -1"),
         "dann-no-grl": ("(extra)", "no GRL"),
         "target-only": ("(extra)", "trained on the target (upper bound)")}


def _result_files(out: Path, name: str, seed: int) -> Path:
    """The run's result.json: OUT/<name>[-settings]/seed<k>/result.json (the dann command's layout)."""
    hits = sorted(p for p in out.glob(f"{name}*/seed{seed}/result.json")
                  if read_json(p).get("run") == name)
    if not hits:
        raise RdfiaError(f"dann {name} seed {seed}: no result.json under {out}")
    return hits[0]


def run(budget, ctx) -> dict:
    b = budget.s3
    out: Path = ctx.out
    res = SectionResult(seeds=list(b.seeds))
    mnist = b.dataset_pair == "mnist"
    res.notes.append("data: MNIST -> MNIST-M (MNIST-M built from BSDS500, seeded)" if mnist else
                     "data: the embedded scikit-learn digits -> digits_m (digits on random photo crops), NOT MNIST; "
                     "the MNIST reference rows are not comparable and stay 'not run at this budget'")
    if b.smoke:
        res.notes.append("smoke run (the dann command's --smoke: small subsets): numbers meaningless")
    common = ["--dataset-pair", b.dataset_pair, "--out", out,
              *run_flags(data_dir=ctx.data_dir, smoke=b.smoke, resume=ctx.resume)]
    seeds = ",".join(map(str, b.seeds))
    plan = [("source-only", seeds, b.source_only_epochs), ("dann", seeds, b.dann_epochs)]
    plan += [(name, str(b.seeds[0]), None) for name in b.extra_runs]
    records: dict[str, list[dict]] = {}
    for name, run_seeds, epochs in plan:
        cli(["dann", name, "--seeds", run_seeds, *(["--epochs", epochs] if epochs else []), *common])
        records[name] = [read_json(_result_files(out, name, int(s))) for s in run_seeds.split(",")]
    mean = lambda recs, k: sum(r[k] for r in recs) / len(recs)  # noqa: E731
    so, da = records["source-only"], records["dann"]
    n = f"{len(b.seeds)} seed(s)"
    if mnist:
        res.measure("s3.source_only_mnist", mean(so, "source_acc"), note=f"{so[0]['epochs']} epochs, {n}",
                    epochs=so[0]["epochs"])
        res.measure("s3.source_only_mnistm", mean(so, "target_acc"), note=f"{so[0]['epochs']} epochs, {n}",
                    epochs=so[0]["epochs"])
        res.measure("s3.dann_mnist", mean(da, "source_acc"), note=f"{da[0]['epochs']} epochs, {n}",
                    epochs=da[0]["epochs"])
        res.measure("s3.dann_mnistm", mean(da, "target_acc"), note=f"{da[0]['epochs']} epochs, {n}",
                    epochs=da[0]["epochs"])
    src, tgt = so[0]["source"], so[0]["target"]
    res.notes.append(f"training steps: source-only {so[0]['steps']}, DANN {da[0]['steps']} (the gain below compares "
                     "the two at these lengths)")
    res.measure("s3.dann_gain", mean(da, "target_acc") - mean(so, "target_acc"),
                note=f"{tgt}: DANN {mean(da, 'target_acc'):.4f} vs source-only {mean(so, 'target_acc'):.4f}")
    for name, recs in records.items():
        r = recs[0]
        res.add(f"{name}: {src} / {tgt} / domain accuracy",
                f"{mean(recs, 'source_acc'):.4f} / {mean(recs, 'target_acc'):.4f} / {mean(recs, 'domain_acc'):.4f}",
                f"{r['epochs']} epochs, {r['steps']} steps, {len(recs)} seed(s)")
        run_dir = _result_files(out, name, int(r["seed"])).parent
        fig, what = _FIGS.get(name, ("(extra)", name))
        if (run_dir / "tsne.png").is_file():
            res.figure(fig, f"t-SNE of {src} and {tgt} features, {what}", run_dir / "tsne.png", out)
        if (run_dir / "curves.png").is_file():
            res.figure("(extra)", f"training curves, {what}", run_dir / "curves.png", out)
    return res.to_dict()
