"""Top-1 / top-5 accuracy on a user's ImageNet validation folder (to confirm converted weights).

Two folder layouts are accepted:

* class subfolders named by WordNet id (``n01440764/ILSVRC2012_val_00000293.JPEG``, the layout of
  torchvision's ``ImageFolder`` / most ImageNet preparation scripts);
* a flat folder of images plus a labels file: lines ``<file name> <label>`` or one ``<label>`` per
  line for the images in sorted name order, where a label is a WordNet id or a class index 0..999
  in the standard (sorted-wnid, torchvision/Keras) order. Note: the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` uses a different, 1-based id order; convert it first.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.data.decode import IMAGE_EXTENSIONS
from rdfia_jax.progress import Progress
from rdfia_jax import xla


@dataclasses.dataclass
class EvalResult:
    """Accuracy counts; percentages via properties."""

    n: int
    top1_correct: int
    top5_correct: int

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / max(self.n, 1)

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / max(self.n, 1)


def _label_index(token: str, where: str) -> int:
    from rdfia_jax import imagenet

    token = token.strip()
    if token.isdigit():
        idx = int(token)
        if not 0 <= idx < 1000:
            raise RdfiaError(f"{where}: class index {idx} out of range 0..999")
        return idx
    wnids = imagenet.wnids()
    if token in wnids:
        return wnids.index(token)
    raise RdfiaError(f"{where}: unknown label {token!r} (expected a WordNet id like n01440764 or an "
                     "index 0..999)")


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def list_labeled_images(folder: str | os.PathLike, labels_file: str | os.PathLike | None = None
                        ) -> tuple[list[Path], np.ndarray]:
    """(image paths, int64 labels) from a wnid-subfolder tree or a flat folder + labels file."""
    from rdfia_jax import imagenet

    folder = Path(folder)
    if not folder.is_dir():
        raise RdfiaError(f"--imagenet-val {folder}: not a folder")
    if labels_file is None:
        wnids = imagenet.wnids()
        subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
        unknown = [d.name for d in subdirs if d.name not in wnids]
        if not subdirs:
            raise RdfiaError(f"{folder}: no class subfolders; expected folders named by WordNet id "
                             "(n01440764, ...), or pass --labels FILE for a flat folder")
        if unknown:
            raise RdfiaError(f"{folder}: subfolders {unknown[:3]} are not ImageNet WordNet ids")
        paths, labels = [], []
        for d in subdirs:
            files = sorted(p for p in d.iterdir() if _is_image(p))
            paths += files
            labels += [wnids.index(d.name)] * len(files)
        if not paths:
            raise RdfiaError(f"{folder}: no images found in its class subfolders")
        return paths, np.asarray(labels, np.int64)
    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise RdfiaError(f"--labels {labels_file}: no such file")
    lines = [ln.split() for ln in labels_file.read_text().splitlines() if ln.strip()]
    if all(len(parts) == 2 for parts in lines):
        paths = [folder / parts[0] for parts in lines]
        labels = [_label_index(parts[1], f"{labels_file}:{i + 1}") for i, parts in enumerate(lines)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise RdfiaError(f"{labels_file}: {len(missing)} listed images are missing, e.g. {missing[0]}")
    elif all(len(parts) == 1 for parts in lines):
        paths = sorted(p for p in folder.iterdir() if _is_image(p))
        if len(paths) != len(lines):
            raise RdfiaError(f"{labels_file}: {len(lines)} labels for {len(paths)} images in {folder}")
        labels = [_label_index(parts[0], f"{labels_file}:{i + 1}") for i, parts in enumerate(lines)]
    else:
        raise RdfiaError(f"{labels_file}: expected lines '<file> <label>' or '<label>'")
    return paths, np.asarray(labels, np.int64)


def evaluate(network, paths: list[Path], labels: np.ndarray, *, batch_size: int = 32,
             mode: str = "crop", limit: int | None = None) -> EvalResult:
    """Top-1/top-5 of ``network`` on images (decoded and resized like torchvision's evaluation).

    Args:
      network: a :class:`rdfia_jax.models.Network` (its preprocessing is applied).
      paths, labels: images and class indices.
      batch_size: images per forward pass (the last batch is padded, so one compilation).
      mode: "crop" (resize 256 + center crop 224, torchvision's protocol) or "resize" (224x224).
      limit: evaluate only the first ``limit`` images.
    Returns:
      An :class:`EvalResult`.
    """
    import jax

    from rdfia_jax import models
    from rdfia_jax.data.batching import map_batches
    from rdfia_jax.data.transforms import load_images, to_unit

    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    graphdef, prep = network.graphdef, network.preprocessing
    top5_fn = xla.jit(lambda state, x: jax.lax.top_k(models.forward(graphdef, state, prep.normalize(x))[0], 5)[1])
    top1 = top5 = 0
    chunk = batch_size * 8  # images decoded at a time (a whole evaluation set would not fit in memory)
    with Progress(len(paths), f"eval {network.name}", unit="img") as bar:
        for start in range(0, len(paths), chunk):
            images = to_unit(load_images(paths[start:start + chunk], mode=mode, size=224))
            # map_batches zero-pads the last batch, so top5_fn keeps one input shape (one compilation)
            pred = map_batches(lambda x: top5_fn(network.state, x), images, batch_size, progress=bar)
            truth = labels[start:start + len(images)]
            top1 += int((pred[:, 0] == truth).sum())
            top5 += int((pred == truth[:, None]).any(axis=1).sum())
    return EvalResult(len(paths), top1, top5)
