"""Proof of the weight conversion without the published files.

For each published (model, format) pair, a small random file is written in the true on-disk layout
(reduced channel widths), converted, loaded, and its logits and intermediate activations compared
with an independent reference forward pass computed straight from the *source* layout (torch:
NCHW activations, OIHW kernels, C,H,W flatten; Keras: NHWC/HWIO, BGR 0-255 input), at 224 and odd
input sizes, float32 with matmul precision "highest": relative error <= 1e-4.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
import pytest

from rdfia_jax import models
from rdfia_jax.weights import convert_file, load_network
from rdfia_jax.weights.sources import convert, read_source
from weight_files import random_source_tensors, write_source_file

WIDTH = 1.0 / 16
TOL = 1e-4

# --------------------------------------------------------------------------------------------
# Reference layers, NCHW (torch semantics), written independently of rdfia_jax.models.layers
# --------------------------------------------------------------------------------------------


def conv_nchw(x, w, b, stride=1, pad=0):
    """Direct convolution in float64 NumPy (im2col + one matmul), NCHW input, OIHW kernel."""
    x = np.pad(np.asarray(x, np.float64).transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    o, c, kh, kw = w.shape
    n, h, wd, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = np.concatenate(
        [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
         for i in range(kh) for j in range(kw)], axis=-1)  # (n, oh, ow, kh*kw*c), offset-major
    wmat = w.astype(np.float64).transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
    return (cols @ wmat).transpose(0, 3, 1, 2) + b[None, :, None, None]


def relu(x):
    return np.maximum(x, np.float32(0))


def _pool_out(n, k, s, ceil):
    if not ceil:
        return (n - k) // s + 1
    o = -(-(n - k) // s) + 1
    if (o - 1) * s >= n:  # torch drops a window starting outside the input
        o -= 1
    return o


def maxpool_nchw(x, k, s, ceil=False):
    """Separable max over explicit windows, clipped at the border (torch's ceil_mode)."""
    n, c, h, w = x.shape
    oh, ow = _pool_out(h, k, s, ceil), _pool_out(w, k, s, ceil)
    rows = np.stack([x[:, :, i * s:min(i * s + k, h), :].max(axis=2) for i in range(oh)], axis=2)
    return np.stack([rows[:, :, :, j * s:min(j * s + k, w)].max(axis=3) for j in range(ow)], axis=3)


def adaptive_avg_nchw(x, out):
    n, c, h, w = x.shape
    res = np.zeros((n, c, out, out), np.float64)
    for i in range(out):
        h0, h1 = (i * h) // out, -(-((i + 1) * h) // out)
        for j in range(out):
            w0, w1 = (j * w) // out, -(-((j + 1) * w) // out)
            res[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float64)
    return res


def linear(x, w, b):
    return np.asarray(x, np.float64) @ w.T.astype(np.float64) + b


# --------------------------------------------------------------------------------------------
# Reference networks from source tensors. Return {our activation name: array in OUR layout}.
# --------------------------------------------------------------------------------------------

_VGG_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_VGG_NAMES = ["1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3", "5_1", "5_2", "5_3"]


def _nhwc(acts):
    return {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in acts.items()}


def ref_vgg16_torch(t, x, timm=False):
    """torchvision (or timm) VGG16 on NCHW input x (already normalized)."""
    acts = {}
    for n, i in zip(_VGG_NAMES, _VGG_IDX):
        x = conv_nchw(x, t[f"features.{i}.weight"], t[f"features.{i}.bias"], pad=1)
        acts[f"conv{n}"] = x
        x = relu(x)
        acts[f"relu{n}"] = x
        if n in ("1_2", "2_2", "3_3", "4_3", "5_3"):
            x = maxpool_nchw(x, 2, 2)
            acts[f"pool{n[0]}"] = x
    x = adaptive_avg_nchw(x, 7)
    acts["avgpool"] = x
    if timm:  # fc6/fc7 as convolutions on the 7x7 map, as timm's ConvMlp stores them
        x = conv_nchw(x, t["pre_logits.fc1.weight"], t["pre_logits.fc1.bias"])[:, :, 0, 0]
        acts["fc6"] = x
        x = relu(x)
        acts["relu6"] = x
        x = conv_nchw(x[:, :, None, None], t["pre_logits.fc2.weight"], t["pre_logits.fc2.bias"])[:, :, 0, 0]
        acts["fc7"] = x
        x = relu(x)
        acts["relu7"] = x
        acts["fc8"] = linear(x, t["head.fc.weight"], t["head.fc.bias"])
    else:
        x = x.reshape(x.shape[0], -1)  # torch flatten: C, H, W
        for name, idx in (("6", 0), ("7", 3)):
            x = linear(x, t[f"classifier.{idx}.weight"], t[f"classifier.{idx}.bias"])
            acts[f"fc{name}"] = x
            x = relu(x)
            acts[f"relu{name}"] = x
        acts["fc8"] = linear(x, t["classifier.6.weight"], t["classifier.6.bias"])
    return _nhwc(acts)


def conv_nhwc(x, k, b, pad=1):
    """Keras 'same' convolution, NHWC input and HWIO kernel, float64 NumPy (im2col)."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, cin, o = k.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    cols = np.concatenate([x[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)], axis=-1)
    return cols @ k.astype(np.float64).reshape(kh * kw * cin, o) + b


def ref_vgg16_keras(t, x_bgr):
    """Keras VGG16 (NHWC, HWIO kernels, Dense [in, out], Flatten in H,W,C order).

    Keras itself only accepts 224x224 with the top; at other sizes the torchvision-style
    adaptive pool to 7x7 (our documented behaviour) is inserted before Flatten.
    """
    acts = {}
    x = x_bgr
    for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)):
        for i in range(1, n + 1):
            x = conv_nhwc(x, t[f"block{b}_conv{i}/kernel"], t[f"block{b}_conv{i}/bias"])
            acts[f"conv{b}_{i}"] = x
            x = relu(x)
        x = maxpool_nchw(x.transpose(0, 3, 1, 2), 2, 2).transpose(0, 2, 3, 1)
        acts[f"pool{b}"] = x
    x = adaptive_avg_nchw(x.transpose(0, 3, 1, 2), 7).transpose(0, 2, 3, 1)
    acts["avgpool"] = x
    x = x.reshape(x.shape[0], -1)
    for ours, layer in (("fc6", "fc1"), ("fc7", "fc2")):
        x = x @ t[f"{layer}/kernel"].astype(np.float64) + t[f"{layer}/bias"]
        acts[ours] = x
        x = relu(x)
    acts["fc8"] = x @ t["predictions/kernel"].astype(np.float64) + t["predictions/bias"]
    return acts


def ref_alexnet(t, x):
    acts = {}
    spec = [(0, 4, 2, True), (3, 1, 2, True), (6, 1, 1, False), (8, 1, 1, False), (10, 1, 1, True)]
    for k, (idx, stride, pad, pool) in enumerate(spec, start=1):
        x = conv_nchw(x, t[f"features.{idx}.weight"], t[f"features.{idx}.bias"], stride, pad)
        acts[f"conv{k}"] = x
        x = relu(x)
        acts[f"relu{k}"] = x
        if pool:
            x = maxpool_nchw(x, 3, 2)
            acts[f"pool{k}"] = x
    x = adaptive_avg_nchw(x, 6)
    acts["avgpool"] = x
    x = x.reshape(x.shape[0], -1)
    for name, idx in (("6", 1), ("7", 4)):
        x = linear(x, t[f"classifier.{idx}.weight"], t[f"classifier.{idx}.bias"])
        acts[f"fc{name}"] = x
        x = relu(x)
    acts["fc8"] = linear(x, t["classifier.6.weight"], t["classifier.6.bias"])
    return _nhwc(acts)


def ref_squeezenet(t, x):
    acts = {}
    x = conv_nchw(x, t["features.0.weight"], t["features.0.bias"], stride=2)
    acts["conv1"] = x
    x = relu(x)
    x = maxpool_nchw(x, 3, 2, ceil=True)
    acts["pool1"] = x
    for fire, idx in {2: 3, 3: 4, 4: 6, 5: 7, 6: 9, 7: 10, 8: 11, 9: 12}.items():
        p = f"features.{idx}"
        s = relu(conv_nchw(x, t[f"{p}.squeeze.weight"], t[f"{p}.squeeze.bias"]))
        e1 = relu(conv_nchw(s, t[f"{p}.expand1x1.weight"], t[f"{p}.expand1x1.bias"]))
        e3 = relu(conv_nchw(s, t[f"{p}.expand3x3.weight"], t[f"{p}.expand3x3.bias"], pad=1))
        x = np.concatenate([e1, e3], axis=1)
        acts[f"fire{fire}"] = x
        if fire in (3, 5):
            x = maxpool_nchw(x, 3, 2, ceil=True)
            acts[f"pool{fire}"] = x
    x = conv_nchw(x, t["classifier.1.weight"], t["classifier.1.bias"])
    acts["conv10"] = x
    x = relu(x)
    x = adaptive_avg_nchw(x, 1)
    acts["avgpool"] = x
    acts["logits"] = x.reshape(x.shape[0], -1)
    return _nhwc(acts)


# --------------------------------------------------------------------------------------------

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)

# (model, source, pth layout, activations compared, logits name, sizes)
CASES = [
    ("vgg16", "torchvision", "legacy", ["conv1_1", "relu2_2", "pool3", "conv5_3", "pool5", "avgpool", "fc6", "relu7"], "fc8",
     [(224, 224), (97, 131), (257, 300)]),
    ("vgg16", "torchvision", "zip", ["conv1_1", "pool5", "fc6"], "fc8", [(97, 131)]),
    ("vgg16", "timm", None, ["conv1_1", "pool5", "avgpool", "fc6", "relu6", "fc7"], "fc8",
     [(224, 224), (97, 131), (257, 300)]),
    ("vgg16", "keras", None, ["conv1_1", "conv3_2", "pool5", "avgpool", "fc6", "fc7"], "fc8",
     [(224, 224), (97, 131)]),
    # Keras 3 model.save_weights: layers grouped by class and rank (conv2d, ..., dense_2)
    ("vgg16", "keras", "keras3-sequential", ["conv1_1", "conv3_2", "conv5_3", "fc6", "fc7"], "fc8", [(224, 224)]),
    ("vgg16", "keras", "keras3-functional", ["conv1_2", "conv4_1", "fc6"], "fc8", [(97, 131)]),
    ("alexnet", "torchvision", "legacy", ["conv1", "pool1", "conv3", "pool5", "avgpool", "fc6", "fc7"], "fc8",
     [(224, 224), (127, 200), (300, 257)]),
    ("alexnet", "torchvision", "zip", ["conv1", "pool5", "fc6"], "fc8", [(127, 200)]),
    ("squeezenet1_1", "torchvision", "legacy", ["conv1", "pool1", "fire2", "pool3", "fire5", "pool5", "fire9", "conv10", "avgpool"],
     "logits", [(224, 224), (97, 131), (225, 229)]),
    ("squeezenet1_1", "torchvision", "zip", ["conv1", "fire9", "conv10"], "logits", [(225, 229)]),
]


def _normalize(net, images01):
    # The stored preprocessing must be what gets applied.
    return net.preprocessing.normalize(images01)


def _rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12))


def _reference(model, source, tensors, images01):
    if source == "keras":
        x = images01[..., ::-1] * np.float32(255.0) - CAFFE_MEAN_BGR  # independent Caffe preprocessing
        return ref_vgg16_keras(tensors, x.astype(np.float32))
    x = ((images01 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    if model == "vgg16":
        return ref_vgg16_torch(tensors, x, timm=(source == "timm"))
    if model == "alexnet":
        return ref_alexnet(tensors, x)
    return ref_squeezenet(tensors, x)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2] or 'file'}")
def test_converted_network_matches_source_layout_reference(case, tmp_path, monkeypatch):
    model, source, layout, names, logits_name, sizes = case
    monkeypatch.setenv("RDFIA_JAX_WEIGHTS", str(tmp_path / "weights"))
    tensors = random_source_tensors(model, source, width=WIDTH, seed=zlib.crc32(repr(case[:3]).encode()) % 1000)
    src = write_source_file(tmp_path / f"published-{model}-{source}.bin", source, tensors,
                            layout=layout or "legacy")
    out = convert_file(model, src)
    net = load_network(model, source)
    assert out.is_file() and net.preprocessing.name == ("caffe" if source == "keras" else "torchvision")
    rng = np.random.default_rng(1)
    fwd = jax.jit(lambda state, x: models.forward(net.graphdef, state, x, tuple(names)))
    with jax.default_matmul_precision("highest"):
        for h, w in sizes:
            images01 = (rng.integers(0, 256, (2, h, w, 3)) / 255.0).astype(np.float32)
            logits, acts = fwd(net.state, _normalize(net, images01))
            ref = _reference(model, source, tensors, images01)
            for name in names:
                err = _rel_err(acts[name].reshape(ref[name].shape), ref[name])
                assert err <= TOL, f"{model}/{source} {name} at {h}x{w}: rel err {err:.2e}"
            err = _rel_err(logits, ref[logits_name])
            assert err <= TOL, f"{model}/{source} logits at {h}x{w}: rel err {err:.2e}"


@pytest.mark.parametrize("model", ["vgg16", "alexnet"])
def test_naive_fc6_transpose_would_be_detected(model, tmp_path):
    """The fc6 C,H,W -> H,W,C re-order matters: a plain transpose gives a clearly different output,
    so the parity test above is sensitive to the flatten-order pitfall."""
    tensors = random_source_tensors(model, "torchvision", width=WIDTH, seed=3)
    path = write_source_file(tmp_path / "w.pth", "torchvision", tensors, layout="zip")
    params = convert(read_source(path), model)
    naive = dict(params)
    fc6 = "classifier.0.weight" if model == "vgg16" else "classifier.1.weight"
    naive[("fc6", "kernel")] = tensors[fc6].T.copy()
    assert not np.allclose(naive[("fc6", "kernel")], params[("fc6", "kernel")])
    images01 = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    ref = _reference(model, "torchvision", tensors, images01)
    # fc6 applied to the reference's pooled map, flattened in OUR (H, W, C) order
    pooled = ref["avgpool"].reshape(1, -1)
    errs = [_rel_err(pooled @ p[("fc6", "kernel")].astype(np.float64) + p[("fc6", "bias")], ref["fc6"])
            for p in (params, naive)]
    assert errs[0] <= TOL and errs[1] > 0.05, errs


# --------------------------------------------------------------------------------------------
# Optional: against real PyTorch modules (torch is a test extra; skipped without it)
# --------------------------------------------------------------------------------------------


def _torch_models(torch, model):
    nn = torch.nn
    if model == "vgg16":
        layers, cin = [], 3
        for v in [4, 4, "M", 8, 8, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        net = nn.Module()
        net.features = nn.Sequential(*layers)
        net.classifier = nn.Sequential(nn.Linear(32 * 49, 256), nn.ReLU(), nn.Dropout(), nn.Linear(256, 256),
                                       nn.ReLU(), nn.Dropout(), nn.Linear(256, 1000))
        pool = nn.AdaptiveAvgPool2d(7)
        forward = lambda x: net.classifier(torch.flatten(pool(net.features(x)), 1))  # noqa: E731
        return net, forward

    class Fire(nn.Module):
        def __init__(self, cin, sq, ex):
            super().__init__()
            self.squeeze, self.expand1x1 = nn.Conv2d(cin, sq, 1), nn.Conv2d(sq, ex, 1)
            self.expand3x3 = nn.Conv2d(sq, ex, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.squeeze(x))
            return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)

    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    net = nn.Module()
    net.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), pool(), Fire(4, 1, 4), Fire(8, 1, 4),
                                 pool(), Fire(8, 2, 8), Fire(16, 2, 8), pool(), Fire(16, 3, 12),
                                 Fire(24, 3, 12), Fire(24, 4, 16), Fire(32, 4, 16))
    net.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(32, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    return net, lambda x: torch.flatten(net.classifier(net.features(x)), 1)


@pytest.mark.parametrize("model", ["vgg16", "squeezenet1_1"])
def test_matches_real_torch_module_saved_with_torch(model, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net, forward = _torch_models(torch, model)
    net.eval()
    path = tmp_path / f"{model}-legacy.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    monkeypatch.setenv("RDFIA_JAX_WEIGHTS", str(tmp_path / "w"))
    convert_file(model, path)
    ours = load_network(model)
    fwd = jax.jit(lambda state, x: models.forward(ours.graphdef, state, x)[0])
    rng = np.random.default_rng(2)
    with jax.default_matmul_precision("highest"), torch.no_grad():
        for h, w in [(224, 224), (99, 133)]:
            images01 = (rng.integers(0, 256, (2, h, w, 3)) / 255.0).astype(np.float32)
            want = forward(torch.from_numpy(((images01 - MEAN) / STD).transpose(0, 3, 1, 2).copy())).numpy()
            got = fwd(ours.state, _normalize(ours, images01))
            assert _rel_err(got, want) <= TOL, (h, w, _rel_err(got, want))
