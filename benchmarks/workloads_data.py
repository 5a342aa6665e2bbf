"""Data loaders at the sections' batch sizes: batches/s of the host-side pipeline, JAX side vs the
PyTorch practical's per-item transforms.

* ``data_gan_b128``: MNIST 32x32 in [-1, 1], batch 128 (report 4). Ours: the resize 28->32 is done
  once per dataset (``gan_resize32``), then a shuffled batch is gathered and scaled. The practical:
  ``DataLoader(MNIST(transform=Compose([Resize(32), ToTensor(), Normalize(0.5, 0.5)])), 128, shuffle=True)``,
  i.e. a PIL resize + tensor conversion per image, then ``collate`` (written out here with PIL and
  torch, since torchvision is not installed; same operations).
* ``data_dann_b64x2``: 64 MNIST + 64 MNIST-M images, standardized with the MNIST-train mean/std,
  3 channels, shuffled independently (report 3).
* ``data_vgg_b8`` / ``data_vgg_b32``: variable-size 15 Scene-like grayscale JPEG-decoded images ->
  resize 224 (report 1.2); PIL does the resize on both sides. rdfia-jax (``prepare_images``) resizes a
  gray image as one channel and hands a uint8 RGB batch to the device, which normalizes it inside the
  network; the practical converts to RGB first and builds a normalized float tensor per image
  (ToTensor + Normalize in its Dataset).

Inputs are synthetic arrays of the real shapes (loader cost does not depend on pixel values), so the
file runs anywhere. ``measure_loaders()`` prints/returns batches/s without the harness.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from benchmarks.harness import Workload

N_DIGITS = 60_000
N_SCENE = 256


def _digits(channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N_DIGITS, 28, 28, channels), dtype=np.uint8)


def _scene_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [(256, 256)] * (N_SCENE - 32) + [(220, 300)] * 32  # mostly 256x256, like 15 Scene
    return [rng.integers(0, 256, (h, w, 1), dtype=np.uint8) for h, w in sizes]


def _cycle(make_iter):
    """An endless iterator over epochs (epoch e uses ``make_iter(e)``)."""
    for epoch in itertools.count():
        yield from make_iter(epoch)


# ----------------------------------------------------------------------------- JAX side (numpy loaders)


def _jax_gan(precision: str = "float32"):
    import jax

    from rdfia_jax.data import iterate_batches
    from rdfia_jax.data.transforms import gan_normalize, gan_resize32

    images32 = gan_resize32(_digits(1, 0))  # once per dataset, outside the timed region
    labels = np.zeros(N_DIGITS, np.int64)
    it = _cycle(lambda e: iterate_batches((images32, labels), 128, seed=0, epoch=e))

    def run_once():
        x, y = next(it)
        jax.block_until_ready(jax.device_put((gan_normalize(x), y)))

    return run_once


def _jax_dann(precision: str = "float32"):
    import jax

    from rdfia_jax.data import iterate_batches
    from rdfia_jax.data.transforms import dann_normalize

    src, tgt = _digits(1, 0), _digits(3, 1)
    labels = np.zeros(N_DIGITS, np.int64)
    it_s = _cycle(lambda e: iterate_batches((src, labels), 64, seed=0, epoch=e, stream=0))
    it_t = _cycle(lambda e: iterate_batches((tgt,), 64, seed=0, epoch=e, stream=1))

    def run_once():
        xs, ys = next(it_s)
        (xt,) = next(it_t)
        x = np.concatenate([dann_normalize(xs), dann_normalize(xt)])
        jax.block_until_ready(jax.device_put((x, ys)))

    return run_once


def _jax_vgg(batch_size: int):
    def setup(precision: str = "float32"):
        import jax

        from rdfia_jax.data.transforms import prepare_images

        images = _scene_images()
        order = itertools.cycle(range(len(images)))

        def run_once():  # as rdfia-jax transfer feeds its extractor: a uint8 batch; the scaling and
            # normalization run inside the compiled network (timed in the feature rows, on both sides)
            batch = prepare_images([images[next(order)] for _ in range(batch_size)], "resize", 224)
            jax.block_until_ready(jax.device_put(batch))

        return run_once

    return setup


# ----------------------------------------------------------------------------- torch side (the practical)


def _torch_item_loader(dataset_items, batch_size, transform, seed=0):
    """The practical's DataLoader(shuffle=True, num_workers=0): per-item transform, then collate."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def epochs():
        while True:
            perm = torch.randperm(len(dataset_items), generator=g).tolist()
            for b in range(0, len(perm) - batch_size + 1, batch_size):
                xs, ys = zip(*(transform(dataset_items[i]) for i in perm[b: b + batch_size]))
                yield torch.stack(xs), torch.tensor(ys)

    return epochs()


def _to_tensor(pil_img):
    """torchvision ToTensor: HWC uint8 -> CHW float in [0, 1]."""
    import torch

    arr = np.asarray(pil_img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


def _torch_gan(precision: str = "float32"):
    from PIL import Image

    images = _digits(1, 0)[..., 0]

    class Items:  # torchvision MNIST.__getitem__: a PIL image per item
        def __len__(self):
            return N_DIGITS

        def __getitem__(self, i):
            return Image.fromarray(images[i], mode="L"), 0

    def transform(item):
        img, y = item
        x = _to_tensor(img.resize((32, 32), Image.BILINEAR))
        return (x - 0.5) / 0.5, y

    it = _torch_item_loader(Items(), 128, transform)

    def run_once():
        next(it)

    return run_once


def _torch_dann(precision: str = "float32"):
    from PIL import Image

    src, tgt = _digits(1, 0)[..., 0], _digits(3, 1)
    mean, std = 0.1307, 0.3081

    def t_src(item):
        img, y = item
        x = _to_tensor(img).repeat(3, 1, 1)
        return (x - mean) / std, y

    def t_tgt(item):
        img, y = item
        return (_to_tensor(img) - mean) / std, y

    class Src:
        def __len__(self):
            return N_DIGITS

        def __getitem__(self, i):
            return Image.fromarray(src[i], mode="L"), 0

    class Tgt:
        def __len__(self):
            return N_DIGITS

        def __getitem__(self, i):
            return Image.fromarray(tgt[i], mode="RGB"), 0

    it_s, it_t = _torch_item_loader(Src(), 64, t_src, 0), _torch_item_loader(Tgt(), 64, t_tgt, 1)

    def run_once():
        import torch

        xs, _ = next(it_s)
        xt, _ = next(it_t)
        torch.cat([xs, xt])

    return run_once


def _torch_vgg(batch_size: int):
    def setup(precision: str = "float32"):
        import torch
        from PIL import Image

        images = _scene_images()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        order = itertools.cycle(range(len(images)))

        def run_once():
            xs = []
            for _ in range(batch_size):
                img = Image.fromarray(images[next(order)][..., 0], mode="L").convert("RGB")
                xs.append((_to_tensor(img.resize((224, 224), Image.BILINEAR)) - mean) / std)
            torch.stack(xs)

        return run_once

    return setup


def workloads() -> list[Workload]:
    """The loader workloads (one batch per run; unit: batches)."""
    return [
        Workload("data_gan_b128", "jax", _jax_gan, 1, "batch"),
        Workload("data_gan_b128", "torch", _torch_gan, 1, "batch"),
        Workload("data_dann_b64x2", "jax", _jax_dann, 1, "batch"),
        Workload("data_dann_b64x2", "torch", _torch_dann, 1, "batch"),
        Workload("data_vgg_b8", "jax", _jax_vgg(8), 1, "batch"),
        Workload("data_vgg_b8", "torch", _torch_vgg(8), 1, "batch"),
        Workload("data_vgg_b32", "jax", _jax_vgg(32), 1, "batch"),
        Workload("data_vgg_b32", "torch", _torch_vgg(32), 1, "batch"),
    ]


def measure_loaders(seconds: float = 2.0, frameworks=("jax", "torch")) -> dict[str, float]:
    """batches/s of every workload (median of 3 timed windows of about ``seconds`` / 3 each)."""
    results = {}
    for w in workloads():
        if w.framework not in frameworks:
            continue
        run = w.setup("float32")
        run()  # warm-up
        rates = []
        for _ in range(3):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                run()
                count += 1
            rates.append(count / (time.perf_counter() - start))
        results[f"{w.name}/{w.framework}"] = float(np.median(rates))
    return results


if __name__ == "__main__":
    for key, rate in measure_loaders().items():
        print(f"{key:<28} {rate:10.1f} batches/s")
