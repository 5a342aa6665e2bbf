"""Train the PyTorch practical's DCGAN / cDCGAN on the same data and score it like rdfia-jax's runs.

The issue's quality target compares rdfia-jax against the PyTorch practical "trained the same way on
the same data": this script trains the practical's networks (``benchmarks.workloads_gan``) with its
loop (Adam 2e-4 / 5e-4, betas (0.5, 0.999), batch 128, shuffled, drop_last), on MNIST train resized to
32x32 exactly as rdfia-jax does, then scores samples with :mod:`rdfia_jax.gan.score` (same classifier,
same 10k real test digits) and writes ``summary.json`` (+ the samples npz) to ``--out``. The cDCGAN
takes about 50-80 min on 2 cores here (2 h on one): the state is saved atomically after every epoch
and ``--resume`` continues a killed run with the same random draws as an uninterrupted one.

    python benchmarks/gan_torch_reference.py --kind gan --data-dir ../shared/data --out runs/torch_gan_s0
    python benchmarks/gan_torch_reference.py --kind cgan --epochs 5 --seed 0 --out runs/torch_cgan_s0

Compare with ``rdfia-jax gan --dataset mnist --data-dir ../shared/data --score-samples N`` (summary.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import torch_state  # noqa: E402
from benchmarks.workloads_gan import NZ, torch_cdcgan, torch_dcgan, torch_step  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("gan", "cgan"), default="gan", help="DCGAN or conditional DCGAN")
    ap.add_argument("--epochs", type=int, default=5, help="epochs (default 5 = 2,345 iterations)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed")
    ap.add_argument("--dataset", choices=("mnist", "digits"), default="mnist", help="training digits")
    ap.add_argument("--data-dir", default=None, help="raw-data folder holding mnist/")
    ap.add_argument("--score-samples", type=int, default=10_000, help="generated images scored")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/torch_state.pt (written atomically after every epoch)")
    args = ap.parse_args(argv)

    import torch

    from rdfia_jax.gan import run, score
    from rdfia_jax.progress import Progress

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images, labels, description, _ = run.load_training_data(args.dataset, args.data_dir)
    x_all = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    y_all = torch.from_numpy(labels).long()
    g, d = torch_dcgan() if args.kind == "gan" else torch_cdcgan()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=5e-4, betas=(0.5, 0.999))
    n, bs = len(x_all), 128
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "torch_state.pt"
    run_key = {"kind": args.kind, "seed": args.seed, "dataset": args.dataset}
    history, start_epoch, train_s_before = [], 0, 0.0
    parts = {"g": g, "d": d, "opt_g": opt_g, "opt_d": opt_d}
    if args.resume and state_path.exists():
        history, start_epoch, train_s_before = torch_state.resume(state_path, run_key, parts)
    t0 = time.perf_counter()
    progress = Progress(args.epochs * (n // bs), f"torch {args.kind} seed {args.seed}", unit="step",
                        initial=len(history))
    for epoch in range(start_epoch, args.epochs):
        order = torch.randperm(n)
        for i in range(n // bs):
            idx = order[i * bs:(i + 1) * bs]
            y = torch.nn.functional.one_hot(y_all[idx], 10).float() if args.kind == "cgan" else None
            history.append(torch_step(g, d, opt_g, opt_d, x_all[idx], y))
            progress.set_postfix(history[-1])
            progress.update()
        torch_state.save(state_path, run_key, parts, history=history, epoch=epoch + 1,
                         train_s=train_s_before + time.perf_counter() - t0)
    progress.close()
    train_s = train_s_before + time.perf_counter() - t0
    g.eval()  # the practical sampled its figures in eval mode too
    with torch.no_grad():
        z = torch.randn(args.score_samples, NZ, 1, 1)
        gen_labels = torch.arange(args.score_samples) % 10
        y = torch.nn.functional.one_hot(gen_labels, 10).float() if args.kind == "cgan" else None
        fake = torch.cat([g(z[i:i + 500], None if y is None else y[i:i + 500]) for i in range(0, args.score_samples, 500)])
    fake = fake.numpy().transpose(0, 2, 3, 1)
    scorer = score.make_scorer(args.dataset, data_dir=args.data_dir)
    result = scorer.score(fake, gen_labels.numpy() if args.kind == "cgan" else None)
    run.write_samples(out / "samples.npz", fake[:2000], gen_labels.numpy()[:2000] if args.kind == "cgan" else None,
                      description=f"torch practical {args.kind} on {description}")
    summary = {"framework": "torch", "kind": args.kind, "epochs": args.epochs, "seed": args.seed,
               "steps": len(history), "train_s": round(train_s, 1), "steps_per_s": round(len(history) / train_s, 3),
               "score": result, "score_description": scorer.description, "data": description,
               "final_loss_d": float(np.mean([h["loss_d"] for h in history[-100:]])),
               "final_loss_g": float(np.mean([h["loss_g"] for h in history[-100:]]))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
