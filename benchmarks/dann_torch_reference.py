"""Train the PyTorch practical's DANN on the same data and evaluate it like rdfia-jax's runs.

Issue 8's DANN target is one seed of a PyTorch rewrite of the practical (MNIST-M 0.8132). One seed
says little about a run whose MNIST-M accuracy spreads by several points between seeds, so this
script trains that rewrite for any seed, the same way: the practical's network
(:func:`benchmarks.workloads_dann.torch_dann`, PyTorch's default init), SGD momentum 0.9, lr
0.01 / (1 + 10 p)^0.75 stepped per epoch (the original notebook; ``--lr-per-step`` for per step),
lambda(p) = 2 / (1 + exp(-gamma p)) - 1 per step, 64 MNIST + 64 MNIST-M images per step in one
forward pass, source and target shuffled independently, cross-entropy on the source half +
BCE-with-logits on the domain logits (source 1, target 0). Data: rdfia-jax's MNIST / seeded
MNIST-M (:func:`rdfia_jax.dann.runs.load_domains`), standardized with the MNIST constants.
Evaluation is :func:`rdfia_jax.dann.steps.evaluate`'s: test accuracy in both domains and domain
accuracy over both test sets (logit > 0 = "source").

The state is saved atomically after every epoch and ``--resume`` continues a killed run with the
same random draws (:mod:`benchmarks.torch_state`, read with the restricted unpickler).

    python benchmarks/dann_torch_reference.py --seed 0 --data-dir ../shared/data --out runs/torch_dann_s0
    python benchmarks/dann_torch_reference.py --dataset-pair digits --epochs 1 --out /tmp/torch_dann  # no download
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import torch_state  # noqa: E402
from benchmarks.workloads_dann import torch_dann  # noqa: E402

SRC_BATCH = TGT_BATCH = 64


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="torch seed (init and data order)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs (default 20, the practical's DANN)")
    ap.add_argument("--gamma", type=float, default=2.0, help="lambda(p) steepness (2: the practical)")
    ap.add_argument("--lr-per-step", action="store_true", help="anneal the lr per step (default: per epoch)")
    ap.add_argument("--dataset-pair", choices=("mnist", "digits"), default="mnist",
                    help="'mnist': MNIST -> MNIST-M; 'digits': the embedded sklearn digits (quick check)")
    ap.add_argument("--data-dir", default=None, help="raw-data folder (mnist/, bsds500/)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/torch_state.pt (written atomically after every epoch)")
    args = ap.parse_args(argv)
    if args.epochs <= 0:
        ap.error("--epochs must be positive")

    import torch
    import torch.nn.functional as F

    from rdfia_jax.dann import runs
    from rdfia_jax.dann import steps as dsteps
    from rdfia_jax.progress import Progress

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    domains = runs.load_domains(args.dataset_pair, data_dir=args.data_dir)
    runs.check_domains(domains)
    mean, std = domains.mean, domains.std
    if mean is None:
        mean, std = runs.image_statistics(domains.source_train.images)

    def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).float().div(255).sub(mean).div(std)
        x = x.permute(0, 3, 1, 2)
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x.contiguous()

    src_x, src_y = domains.source_train.images, torch.tensor(np.asarray(domains.source_train.labels, np.int64))
    tgt_x = domains.target_train.images
    steps_per_epoch = min(len(src_x) // SRC_BATCH, len(tgt_x) // TGT_BATCH)
    total = steps_per_epoch * args.epochs

    model = torch_dann()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    domain_y = torch.cat([torch.ones(SRC_BATCH), torch.zeros(TGT_BATCH)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "torch_state.pt"
    run_key = {"seed": args.seed, "gamma": args.gamma, "lr_per_step": args.lr_per_step,
               "dataset_pair": args.dataset_pair, "epochs": args.epochs}
    history, start_epoch, train_s_before = [], 0, 0.0
    parts = {"model": model, "opt": opt}
    if args.resume and state_path.exists():
        history, start_epoch, train_s_before = torch_state.resume(state_path, run_key, parts)
    progress = Progress(total, f"torch dann seed {args.seed}", unit="step", initial=len(history))
    t0 = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, args.epochs):
        # Drawn from the global RNG at the epoch start: a resumed run draws what an uninterrupted one would.
        src_order = torch.randperm(len(src_x)).numpy()
        tgt_order = torch.randperm(len(tgt_x)).numpy()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            p = step / total
            factor = 2.0 / (1.0 + math.exp(-args.gamma * p)) - 1.0
            p_lr = p if args.lr_per_step else epoch / args.epochs
            for group in opt.param_groups:
                group["lr"] = 0.01 / (1.0 + 10 * p_lr) ** 0.75
            si = np.sort(src_order[i * SRC_BATCH:(i + 1) * SRC_BATCH])
            ti = np.sort(tgt_order[i * TGT_BATCH:(i + 1) * TGT_BATCH])
            x = torch.cat([to_tensor(src_x[si]), to_tensor(tgt_x[ti])])  # one forward pass, both domains
            cls, dom = model(x, factor)
            label_loss = F.cross_entropy(cls[:SRC_BATCH], src_y[si])
            domain_loss = F.binary_cross_entropy_with_logits(dom, domain_y)
            opt.zero_grad()
            (label_loss + domain_loss).backward()
            opt.step()
            history.append({"label_loss": label_loss.item(), "domain_loss": domain_loss.item()})
            if i % 50 == 0:
                progress.set_postfix(history[-1])
            progress.update()
        torch_state.save(state_path, run_key, parts, history=history, epoch=epoch + 1,
                         train_s=train_s_before + time.perf_counter() - t0)
    progress.close()
    train_s = train_s_before + time.perf_counter() - t0

    model.eval()

    def eval_fn(_params, images_u8: np.ndarray):  # rdfia_jax's eval contract: (cls, dom, features)
        with torch.no_grad():
            cls, dom = model(to_tensor(images_u8), 0.0)
        return cls.numpy(), dom.numpy(), None

    final = dsteps.evaluate(eval_fn, None, domains.source_test, domains.target_test)
    summary = {"framework": "torch", "run": "dann", "seed": args.seed, "epochs": args.epochs,
               "gamma": args.gamma, "lr_per_epoch": not args.lr_per_step, "steps": len(history),
               "source": domains.source_name, "target": domains.target_name, **final,
               "train_s": round(train_s, 1), "steps_per_s": round(len(history) / max(train_s, 1e-9), 3),
               "threads": args.threads}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
