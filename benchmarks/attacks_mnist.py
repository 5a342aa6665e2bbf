"""Measure FGSM, PGD and ADef on the small MNIST classifier (issue 7 targets).

Targets: untargeted L-inf PGD at eps = 0.3 and ADef each fool >= 95 % of 1,000 correctly classified
MNIST test digits. Prints a Markdown table (success rate, median norms, iterations, time) and,
with ``--out``, writes it with a JSON copy, example figures and the robust-accuracy curves there.

Usage::

    python benchmarks/attacks_mnist.py --data-dir /work/shared/data --n-images 1000 [--out runs/attacks_mnist]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $RDFIA_JAX_DATA)")
    p.add_argument("--n-images", type=int, default=1000, help="correctly classified test digits to attack")
    p.add_argument("--seed", type=int, default=0, help="classifier seed")
    p.add_argument("--only", default=None, help="comma-separated subset of: fgsm,pgd_linf,pgd_l2,adef")
    p.add_argument("--batch-size", type=int, default=500, help="images per jitted attack call")
    p.add_argument("--out", default=None, help="folder for the table, JSON, figures and curves")
    p.add_argument("--curves", action="store_true", help="also compute robust-accuracy curves (slower)")
    args = p.parse_args(argv)

    import jax

    from rdfia_jax.attacks import evaluate
    from rdfia_jax.classifier import get_classifier
    from rdfia_jax.data import load

    clf = get_classifier("mnist", seed=args.seed, data_dir=args.data_dir)
    test = load("mnist", "test", data_dir=args.data_dir)
    x_all = np.asarray(test.images, np.float32) / np.float32(255.0)
    y_all = np.asarray(test.labels)
    apply = clf.apply
    idx = evaluate.correctly_classified(apply, clf.params, x_all, y_all, args.n_images)
    x, y = x_all[idx], y_all[idx]
    print(f"classifier: seed {args.seed}, test accuracy {clf.test_accuracy:.4f}; attacking {len(idx)} correctly "
          f"classified MNIST test digits (jax {jax.__version__}, {jax.devices()[0].platform})", file=sys.stderr)

    configs = [
        ("FGSM L-inf eps=0.3", "fgsm", dict(eps=0.3, norm="linf")),
        ("PGD L-inf eps=0.3 (40 steps, random start)", "pgd", dict(eps=0.3, norm="linf", steps=40)),
        ("PGD L2 eps=2.0 (40 steps, random start)", "pgd", dict(eps=2.0, norm="l2", steps=40)),
        ("ADef (sigma=1, overshoot=1.2, 9 candidates, <=50 it.)", "adef",
         dict(max_iter=50, sigma=1.0, overshoot=1.2, candidates=9)),
    ]
    keys = ["fgsm", "pgd_linf", "pgd_l2", "adef"]
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c, k in zip(configs, keys) if k in wanted]
    rows, results = [], {}
    for name, method, kw in configs:
        # Compile on a small batch first, so the timed run measures the steady-state cost.
        start = time.perf_counter()
        evaluate.run_attack(method, apply, clf.params, x[:args.batch_size], y[:args.batch_size],
                            batch_size=args.batch_size, **kw)
        first = time.perf_counter() - start
        res, seconds = evaluate.run_attack(method, apply, clf.params, x, y, batch_size=args.batch_size,
                                           progress=True, **kw)
        row = evaluate.summarize(res, seconds, name)
        row["first_batch_seconds_with_compile"] = round(first, 2)
        rows.append(row)
        results[method + ("" if method != "pgd" else "_" + kw["norm"])] = res
        print(f"{name}: {row}", file=sys.stderr, flush=True)
    table = evaluate.format_table(rows)
    print(table)

    if args.out:
        from rdfia_jax.attacks import figures
        from rdfia_jax.fileio import atomic_write_bytes

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "table.md", (table + "\n").encode())
        atomic_write_bytes(out / "results.json", json.dumps({"classifier_test_accuracy": clf.test_accuracy,
                                                             "images": int(len(idx)), "rows": rows}, indent=2).encode())
        names = [str(i) for i in range(10)]
        for key, res in results.items():
            figures.plot_examples(out / f"examples_{key}.png", x[:8], res["adversarial"][:8], y[:8], res["pred"][:8],
                                  names, fields=res.get("field", None) if key == "adef" else None,
                                  title=key)
        if args.curves:
            start = time.perf_counter()
            curves = {}
            sub_x, sub_y = x_all[:args.n_images], y_all[:args.n_images]  # all digits, errors included
            for label, method, norm, grid in [("FGSM L-inf", "fgsm", "linf", [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]),
                                              ("PGD L-inf", "pgd", "linf", [0.05, 0.1, 0.15, 0.2, 0.25, 0.3])]:
                curves[label] = evaluate.robust_accuracy_curve(method, apply, clf.params, sub_x, sub_y, grid,
                                                               batch_size=args.batch_size, norm=norm)
            adef_curve = evaluate.robust_accuracy_curve("adef", apply, clf.params, sub_x, sub_y,
                                                        np.linspace(0.25, 3.0, 12), batch_size=args.batch_size)
            figures.plot_robust_accuracy(out / "robust_accuracy.png", {"L-inf budget eps (pixels in [0, 1])": curves,
                                                                       "ADef: max displacement (pixels)": {"ADef": adef_curve}},
                                         title="small MNIST classifier")
            all_curves = {**curves, "ADef (max displacement, pixels)": adef_curve}
            atomic_write_bytes(out / "curves.json", json.dumps(
                {k: {"eps": np.asarray(e).tolist(), "accuracy": np.asarray(a).tolist()} for k, (e, a) in all_curves.items()},
                indent=1).encode())
            print(f"curves: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
