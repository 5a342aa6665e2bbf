"""The PyTorch practical's transfer-learning loop (report 1.2, relu7 + resize 224), timed end to end.

Issue 23 times rdfia-jax's ``transfer --rows relu7-resize`` against this script on the same 15 Scene
folder and the same VGG16 weights. It is the practical's section-1.2 code as its users run it,
without torchvision (not installable beside this torch build), every step written as torchvision does it:

* ``ImageFolder`` walk: class folders sorted, files sorted, torchvision's image extensions, each
  image opened with PIL and ``convert("RGB")`` (``pil_loader``; grayscale 15 Scene becomes 3 equal channels);
* ``Resize((224, 224))`` = PIL ``Image.resize(..., BILINEAR)`` (PIL's filter antialiases), ``ToTensor``
  (uint8 HWC -> float CHW / 255), ``Normalize`` with the ImageNet mean and std;
* ``DataLoader(batch_size=8, shuffle=False)`` (the practical's template used ``num_workers=2``; the
  default here is 0, ``--workers`` changes it);
* torchvision's VGG16 (:func:`benchmarks.torch_models.vgg16`) with ``classifier[:-2]`` (relu7), eval
  mode, ``torch.no_grad()``; features gathered once (the template's per-batch ``torch.cat`` is
  quadratic, left out), L2-normalized (``F.normalize``: x / max(||x||, 1e-12));
* ``LinearSVC(C=1)`` fitted on train, accuracy on test (``random_state=0``, rdfia-jax's seed: the
  same features then give the same accuracy; the time does not depend on it).

``--make-weights FILE --seed S`` writes the shared weights instead: a torchvision-layout VGG16
state_dict with torchvision's own random init (what ``torchvision.models.vgg16()`` gives), saved with
``torch.save``; rdfia-jax reads that file directly (``--weights vgg16=FILE``).

    python benchmarks/transfer_torch_reference.py --make-weights /tmp/vgg16_seed0.pth --seed 0
    python benchmarks/transfer_torch_reference.py --data ../shared/data/15SceneData \\
        --weights /tmp/vgg16_seed0.pth --out runs/transfer_torch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224
# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------
# Data: ImageFolder + the practical's transforms
# ----------------------------------------------------------------------------------------------

def find_classes(split_dir: Path) -> list[str]:
    """``ImageFolder.find_classes``: the sorted sub-folder names."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def make_dataset(split_dir: Path, classes: list[str], per_class: int | None = None) -> list[tuple[str, int]]:
    """``ImageFolder``'s (path, class index) list: classes in order, ``os.walk`` sorted, files sorted;
    ``per_class`` keeps the first N of each class (rdfia-jax's ``--per-class`` keeps the same ones)."""
    samples = []
    for idx, cls in enumerate(classes):
        kept = 0
        for root, _, fnames in sorted(os.walk(split_dir / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS) and (per_class is None or kept < per_class):
                    samples.append((os.path.join(root, fname), idx))
                    kept += 1
    return samples


def pil_loader(path: str):
    """torchvision's ``pil_loader``: open, convert to RGB."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def transform(img):
    """``Compose([Resize((224, 224)), ToTensor(), Normalize(MEAN, STD)])`` on a PIL RGB image."""
    import torch
    from PIL import Image

    if img.size != (SIZE, SIZE):  # F.resize returns the image unchanged when it already has the size
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(img.size[1], img.size[0], 3)
    x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
    mean = torch.as_tensor(MEAN, dtype=x.dtype).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(mean).div_(std)


class ImageFolderDataset:
    """A map-style dataset as ``ImageFolder(root, transform)``: ``(tensor, class index)`` per item."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        return transform(pil_loader(path)), target


def scene_root(data: str | os.PathLike) -> Path:
    """The folder holding train/ and test/ (``data`` itself, or ``data/15SceneData``)."""
    base = Path(data).expanduser()
    for cand in (base, base / "15SceneData"):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise ValueError(f"{base}: no train/ and test/ class folders here or in {base / '15SceneData'}")


def splits(root: Path, per_class: int | None = None):
    """(train samples, test samples, class names); refuses splits whose class folders differ
    (``ImageFolder`` would index each split on its own and shift the labels)."""
    classes = find_classes(root / "train")
    if not classes:
        raise ValueError(f"{root / 'train'}: no class folders")
    if find_classes(root / "test") != classes:
        raise ValueError(f"{root}: train/ and test/ have different class folders")
    train, test = (make_dataset(root / s, classes, per_class) for s in ("train", "test"))
    for name, samples in (("train", train), ("test", test)):
        missing = sorted(set(range(len(classes))) - {t for _, t in samples})
        if missing:
            raise ValueError(f"{root / name}: no images in class folder(s) {', '.join(classes[i] for i in missing)}")
    return train, test, classes


# ----------------------------------------------------------------------------------------------
# Model, weights, features
# ----------------------------------------------------------------------------------------------

def torchvision_init_(model) -> None:
    """torchvision ``VGG._initialize_weights``: conv kaiming-normal (fan_out, relu), linear N(0, 0.01), biases 0."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


def make_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded random torchvision-layout VGG16 state_dict with ``torch.save`` (atomic)."""
    import torch

    from benchmarks.torch_models import vgg16

    torch.manual_seed(seed)
    net = vgg16()
    torchvision_init_(net)
    path = Path(path)
    # Saved under its final name in a private folder, then moved: torch.save names the zip's records
    # after the file, so the same seed gives the same bytes wherever the file is written from.
    tmp_dir = path.parent / f".{path.name}.tmp{os.getpid()}"
    tmp_dir.mkdir(parents=True)
    try:
        torch.save(net.state_dict(), tmp_dir / path.name)
        os.replace(tmp_dir / path.name, path)
    finally:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    return path


def vgg16_relu7(weights: str | os.PathLike):
    """torchvision's VGG16 with the file's state_dict, cut after relu7 (``classifier[:-2]``), eval mode."""
    import torch

    from benchmarks.torch_models import vgg16

    net = vgg16()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.classifier = torch.nn.Sequential(*list(net.classifier.children())[:-2])
    return net.eval()


def extract_features(model, loader, desc: str = "features", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The practical's ``extract_features``: relu7 of every batch under ``no_grad``; (X float32 (N, 4096), y)."""
    import torch

    from rdfia_jax.progress import Progress

    xs, ys = [], []
    with Progress(len(loader.dataset), desc, unit="img", enabled=progress) as bar, torch.no_grad():
        for inputs, targets in loader:
            xs.append(model(inputs))
            ys.append(targets)
            bar.update(len(targets))
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """``F.normalize(X, dim=1)``: each row over max(its L2 norm, 1e-12)."""
    import torch

    return torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy()


def loader_for(samples, batch_size: int, workers: int):
    import torch

    return torch.utils.data.DataLoader(ImageFolderDataset(samples), batch_size=batch_size, shuffle=False,
                                       num_workers=workers)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", metavar="DIR", help="the 15SceneData folder (train/<class>/*.jpg, test/<class>/*.jpg) "
                                                  "or a folder containing it")
    ap.add_argument("--weights", metavar="FILE", help="torchvision-layout VGG16 state_dict (.pth), read with "
                                                      "torch.load(weights_only=True)")
    ap.add_argument("--out", metavar="DIR", help="output folder (summary.json)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8, the practical's)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (default 0; the template used 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--per-class", type=int, default=None, metavar="N",
                    help="first N images of each class in each split (quick checks; default all)")
    ap.add_argument("--save-features", action="store_true",
                    help="also write OUT/features.npz (raw relu7 of train and test, labels) for parity checks")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar / lines")
    ap.add_argument("--make-weights", metavar="FILE",
                    help="write seeded random VGG16 weights (torchvision init, torch.save) to FILE and exit")
    ap.add_argument("--seed", type=int, default=0, help="seed of --make-weights (default 0)")
    args = ap.parse_args(argv)

    if args.make_weights:
        path = make_weights(args.make_weights, args.seed)
        print(f"wrote {path} (VGG16, torchvision init, seed {args.seed}, {path.stat().st_size:,} bytes)")
        return 0
    for flag, value in (("--data", args.data), ("--weights", args.weights), ("--out", args.out)):
        if not value:
            ap.error(f"{flag} is required (or --make-weights FILE)")
    for flag, value in (("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value < 1:
            ap.error(f"{flag} must be at least 1; got {value}")
    if args.workers < 0:
        ap.error(f"--workers must be >= 0; got {args.workers}")
    if args.per_class is not None and args.per_class < 1:
        ap.error(f"--per-class must be at least 1; got {args.per_class}")
    if not Path(args.data).expanduser().is_dir():
        ap.error(f"--data {args.data}: no such folder")
    if not Path(args.weights).is_file():
        ap.error(f"--weights {args.weights}: no such file (make one with --make-weights FILE)")
    try:
        root = scene_root(args.data)
        train, test, classes = splits(root, args.per_class)
    except ValueError as err:
        ap.error(f"--data: {err}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out}: exists and is not a folder")

    import pickle

    import sklearn
    import torch
    from sklearn.svm import LinearSVC

    from rdfia_jax.fileio import atomic_write_bytes

    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    try:
        model = vgg16_relu7(args.weights)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        ap.error(f"--weights {args.weights}: not a torchvision VGG16 state_dict ({first})")
    load_s = time.perf_counter() - t0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        ap.error(f"--out {out}: cannot create ({err})")

    t0 = time.perf_counter()
    x_train, y_train = extract_features(model, loader_for(train, args.batch_size, args.workers),
                                        "torch vgg16 relu7 train", progress)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_test, y_test = extract_features(model, loader_for(test, args.batch_size, args.workers),
                                      "torch vgg16 relu7 test", progress)
    test_s = time.perf_counter() - t0
    if args.save_features:
        atomic_write_bytes(out / "features.npz", _npz(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))

    t0 = time.perf_counter()
    svm = LinearSVC(C=1.0, random_state=0)
    svm.fit(l2_normalize(x_train), y_train)
    accuracy = float(svm.score(l2_normalize(x_test), y_test))
    svm_s = time.perf_counter() - t0
    total_s = time.perf_counter() - t_start

    summary = {"framework": "torch", "run": "transfer", "row": "relu7-resize", "accuracy": accuracy,
               "n_train": len(train), "n_test": len(test), "classes": len(classes), "per_class": args.per_class,
               "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads,
               "load_s": round(load_s, 3), "train_features_s": round(train_s, 3),
               "test_features_s": round(test_s, 3), "feature_s": round(train_s + test_s, 3),
               "images_per_s": round((len(train) + len(test)) / max(train_s + test_s, 1e-9), 3),
               "svm_s": round(svm_s, 3), "total_s": round(total_s, 3), "weights": str(Path(args.weights).resolve()),
               "data": str(root.resolve()), "torch": torch.__version__, "sklearn": sklearn.__version__}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(json.dumps(summary, indent=2))
    return 0


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
