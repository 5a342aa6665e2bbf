"""Feature extraction for transfer learning (report 1.2): VGG16 up to relu7 (and AlexNet up to relu7),
images/s at batch 8 (the practical's) and 32, JAX vs the PyTorch practical's code.

The torch side is the practical's loop body: ``vgg16.classifier = classifier[:-2]``, eval mode,
``torch.no_grad()``, a normalized NCHW float batch in, features out. torchvision is not installed here,
so the torch VGG16 / AlexNet are written out layer by layer (same architecture, random weights: speed
does not depend on the weight values). Both sides take a preprocessed 224x224 uint8 batch, so JPEG
decoding and resizing (identical PIL code for both) are outside the timed region.

Keras: the same normalization then ``keras.Model(vgg.input, vgg.get_layer("fc2").output)`` (AlexNet:
``"fc7"``) and ``predict_on_batch``, as a Keras user extracts features (NHWC).
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Workload, torch_compiled

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _batch(batch_size: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)


def _jax_setup(model: str, batch_size: int):
    def setup(precision: str = "float32"):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from rdfia_jax import models
        from rdfia_jax.transfer.features import FeatureExtractor

        dtype = jnp.bfloat16 if precision == "bfloat16" else None
        net = models.Network.from_module(model, models.create(model, rngs=nnx.Rngs(0), dtype=dtype))
        if dtype is not None:  # parameters in bfloat16 too, as the torch side
            net.state = jax.tree.map(lambda a: a.astype(dtype), net.state)
        ex = FeatureExtractor(net, ["relu7"], batch_size=batch_size)
        x = jax.device_put(_batch(ex.batch_size), ex.batch_sharding)

        def run_once():  # the harness times the first call separately (compilation)
            return ex._fn(ex.state, x)[0].block_until_ready()

        return run_once

    return setup


def _torch_model(model: str):
    """torchvision's network (hand-built twin) truncated as the practical does: features at relu7."""
    from benchmarks.torch_models import MODELS

    net = MODELS[model]()
    net.classifier = net.classifier[:-2] if model == "vgg16" else net.classifier[:-1]
    return net.eval()


def _torch_setup(model: str, batch_size: int):
    def setup(precision: str = "float32"):
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        net = torch_compiled(_torch_model(model).to(dev, dtype))
        mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
        u8 = torch.from_numpy(_batch(batch_size)).permute(0, 3, 1, 2).to(dev)

        def run_once():
            with torch.no_grad():  # ToTensor + Normalize + forward, as the practical's loop
                out = net(((u8.float() / 255.0 - mean) / std).to(dtype))
            if dev == "cuda":
                torch.cuda.synchronize()
            return out

        return run_once

    return setup


#: The Keras layer whose output is relu7 (Dense with ReLU): keras.applications' name / ours.
KERAS_RELU7 = {"vgg16": "fc2", "alexnet": "fc7"}


def _keras_setup(model: str, batch_size: int):
    def setup(precision: str = "float32"):
        import keras
        import ml_dtypes

        from benchmarks import keras_models
        from benchmarks.workloads_inference import keras_model

        net = keras_model(keras_models.MODELS[model], precision)
        features = keras.Model(net.inputs, net.get_layer(KERAS_RELU7[model]).output)
        dtype = ml_dtypes.bfloat16 if precision == "bfloat16" else np.float32
        mean, std = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
        u8 = _batch(batch_size)

        def run_once():  # ToTensor + Normalize (NumPy) + predict_on_batch
            return features.predict_on_batch(((u8 / np.float32(255.0) - mean) / std).astype(dtype))

        return run_once

    return setup


def workloads() -> list:
    out = []
    for model, sizes in (("vgg16", (8, 32)), ("alexnet", (32,))):
        for bs in sizes:
            name = f"{model}_relu7_features_b{bs}"
            out.append(Workload(name, "jax", _jax_setup(model, bs), bs, "images", "1.2"))
            out.append(Workload(name, "torch", _torch_setup(model, bs), bs, "images", "1.2"))
            out.append(Workload(name, "keras", _keras_setup(model, bs), bs, "images", "1.2"))
    return out
