"""The published ImageNet weight files this project can convert (mirrored in weights/manifest.json).

Only these (model, source) pairs exist: VGG16 from torchvision, timm and Keras; AlexNet and
SqueezeNet 1.1 from torchvision only.
"""

from __future__ import annotations

import dataclasses

from rdfia_jax.errors import RdfiaError
from rdfia_jax.preprocess import CAFFE, TORCHVISION, Preprocessing

SOURCES = ("torchvision", "timm", "keras")


@dataclasses.dataclass(frozen=True)
class PublishedFile:
    """One downloadable weight file.

    Attributes:
      model: our model name.
      source: "torchvision", "timm" or "keras".
      filename: the published file name (what to save the download as).
      url: where it is published.
      file_format: "pth" (PyTorch pickle), "safetensors" or "h5".
      sha256_prefix: torchvision's check: first hex digits of the file's sha256, in its name.
      md5: full md5 digest where the publisher gives one (Keras ``get_file(file_hash=...)``).
      approx_size_mb: approximate download size, for progress messages.
      preprocessing: the input normalization these weights were trained with.
      top1, top5: published ImageNet validation accuracies (percent), for ``rdfia-jax eval``.
    """

    model: str
    source: str
    filename: str
    url: str
    file_format: str
    sha256_prefix: str | None
    md5: str | None
    approx_size_mb: float
    preprocessing: Preprocessing
    top1: float | None
    top5: float | None
    notes: str = ""

    @property
    def local_name(self) -> str:
        """File name used in the downloads folder (timm's generic name gets the model id)."""
        return "vgg16.tv_in1k-model.safetensors" if self.source == "timm" else self.filename

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        d["local_name"] = self.local_name
        return d


PUBLISHED: tuple[PublishedFile, ...] = (
    PublishedFile(
        "vgg16", "torchvision", "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth", "pth", "397923af", None, 528.0,
        TORCHVISION, 71.592, 90.382,
        "PyTorch legacy (pre-zip, 2017) serialization; keys features.N / classifier.N, conv OIHW, "
        "linear [out, in], classifier.0 flattened in C,H,W order."),
    PublishedFile(
        "vgg16", "timm", "model.safetensors",
        "https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors", "safetensors",
        None, None, 528.0, TORCHVISION, 71.592, 90.382,
        "timm vgg16.tv_in1k: the torchvision weights; fc6/fc7 stored as convs "
        "pre_logits.fc1 [4096,512,7,7] / pre_logits.fc2 [4096,4096,1,1], fc8 as head.fc."),
    PublishedFile(
        "vgg16", "keras", "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "h5", None,
        "64373286793e3c8b2b4e3219cbf3544b", 528.0, CAFFE, 71.27, 90.05,
        "Original Caffe weights: BGR, 0-255 minus mean (103.939, 116.779, 123.68); HDF5 groups "
        "block1_conv1 ... fc1, fc2, predictions; kernels HWIO / [in, out], fc1 in H,W,C order."),
    PublishedFile(
        "alexnet", "torchvision", "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "pth", "7be5be79", None,
        233.0, TORCHVISION, 56.522, 79.066,
        "PyTorch legacy serialization; features.{0,3,6,8,10}, classifier.{1,4,6}."),
    PublishedFile(
        "squeezenet1_1", "torchvision", "squeezenet1_1-b8a52dc0.pth",
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth", "pth", "b8a52dc0", None,
        4.7, TORCHVISION, 58.178, 80.624,
        "PyTorch legacy serialization; features.0 conv1, features.{3,4,6,7,9..12} fire2..fire9 "
        "(squeeze / expand1x1 / expand3x3), classifier.1 conv10."),
)


def published(model: str, source: str = "torchvision") -> PublishedFile:
    """The published file for (model, source); RdfiaError if that pair was never published."""
    for entry in PUBLISHED:
        if entry.model == model and entry.source == source:
            return entry
    available = [e.source for e in PUBLISHED if e.model == model]
    raise RdfiaError(f"no {source} weights are published for {model}; available sources: "
                     f"{', '.join(available) or 'none'}")


def converted_filename(model: str, source: str) -> str:
    """Name of the converted file in ``paths.weights_dir()``: torchvision is the default variant."""
    return f"{model}.safetensors" if source == "torchvision" else f"{model}-{source}.safetensors"
