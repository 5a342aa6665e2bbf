"""Resumable state of the PyTorch reference trainers (``gan_torch_reference``, ``dann_torch_reference``).

One file per run, written after every epoch: the ``state_dict`` of each named module / optimizer,
torch's global RNG state, the loss history, the epoch count, the training seconds so far and a
``run_key`` naming the run. Written to a temp file and renamed (a kill never leaves half a file);
read with ``torch.load(weights_only=True)``, the restricted unpickler (tensors, dicts, numbers,
never arbitrary objects). Each trainer draws an epoch's data order from the global RNG at the epoch
start, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path


def save(path: Path, run_key: dict, parts: dict, *, history: list, epoch: int, train_s: float) -> None:
    """Atomically write ``parts`` (name -> module or optimizer) and the run's progress to ``path``."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({**{name: p.state_dict() for name, p in parts.items()}, "rng": torch.get_rng_state(),
                "history": history, "epoch": epoch, "train_s": train_s, "run_key": run_key}, tmp)
    tmp.replace(path)


def resume(path: Path, run_key: dict, parts: dict) -> tuple[list, int, float]:
    """Load ``path`` into ``parts`` and torch's RNG; ``(history, epochs_done, train_s)``.

    Raises SystemExit naming both runs when the file belongs to another run (kind, seed, data...).
    """
    import torch

    state = torch.load(path, weights_only=True)
    if state.get("run_key") != run_key:
        raise SystemExit(f"{path} belongs to the run {state.get('run_key')}, not {run_key}: "
                         "use another --out or drop --resume")
    for name, p in parts.items():
        p.load_state_dict(state[name])
    torch.set_rng_state(state["rng"])
    history, epoch = state["history"], int(state["epoch"])
    print(f"resumed after epoch {epoch} ({len(history)} steps)", flush=True)
    return history, epoch, float(state["train_s"])
