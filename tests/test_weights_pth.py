"""The torch-free .pth reader: both layouts, views/strides/shared storages, hostile and corrupt files."""

from __future__ import annotations

import struct
import sys
import zipfile

import numpy as np
import pytest

from pth_writer import PickleWriter, TensorSpec, save_pth
from rdfia_jax.errors import RdfiaError
from rdfia_jax.weights.pth import read_pth

LAYOUTS = ["legacy", "zip"]


def _sample():
    """A storage shared by several views (offset, transposed, strided), plus other dtypes."""
    base = np.arange(24, dtype=np.float32) * 0.5 - 3.0
    storages = {"s0": base, "s1": np.array([1, -2, 3, 2**40], np.int64),
                "s2": np.array([0.25, -1.5, 7.0], np.float16), "s3": np.array([True, False, True]),
                "s4": np.arange(6, dtype=np.uint8)}
    specs = {
        "view.offset": TensorSpec("s0", 2, (2, 3), (3, 1)),
        "view.transposed": TensorSpec("s0", 0, (6, 4), (1, 6)),
        "view.strided": TensorSpec("s0", 1, (3, 2), (8, 3)),
        "scalar": TensorSpec("s0", 23, (), ()),
        "empty": TensorSpec("s0", 0, (0, 5), (5, 1)),
        "long": TensorSpec("s1", 0, (4,), (1,)),
        "half": TensorSpec("s2", 0, (3,), (1,)),
        "bool": TensorSpec("s3", 0, (3,), (1,)),
        "bytes": TensorSpec("s4", 0, (2, 3), (3, 1)),
    }
    expected = {
        "view.offset": base[2:8].reshape(2, 3),
        "view.transposed": base.reshape(4, 6).T,
        "view.strided": np.lib.stride_tricks.as_strided(base[1:], (3, 2), (32, 12)),
        "scalar": np.array(base[23]),
        "empty": np.zeros((0, 5), np.float32),
        "long": storages["s1"], "half": storages["s2"], "bool": storages["s3"],
        "bytes": storages["s4"].reshape(2, 3),
    }
    return specs, storages, expected


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("old_rebuild", [False, True])
def test_roundtrip_views_offsets_strides_shared_storage(tmp_path, layout, old_rebuild):
    specs, storages, expected = _sample()
    path = tmp_path / "sd.pth"
    save_pth(path, specs, storages=storages, legacy=(layout == "legacy"), old_rebuild=old_rebuild)
    got = read_pth(path)
    assert list(got) == list(specs)  # OrderedDict order preserved
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert got[name].flags.c_contiguous


def test_zip_layout_matches_torch_conventions(tmp_path):
    path = tmp_path / "model.pth"
    save_pth(path, {"w": np.ones((2, 2), np.float32)})
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "model/data.pkl" and "model/data/0" in names and "model/byteorder" in names
        assert zf.read("model/version") == b"3\n"
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
    raw = path.read_bytes()
    off = raw.index(b"model/data/0") + len("model/data/0")
    (extra_len,) = struct.unpack("<H", raw[off - len("model/data/0") - 2: off - len("model/data/0")])
    assert (off + extra_len) % 64 == 0  # storage data aligned to 64 bytes, as torch writes it


# ----------------------------------------------------------------------------------------------
# Hostile files: the code must not run.
# ----------------------------------------------------------------------------------------------


def _hostile_pickles(sentinel):
    cmd = f"touch {sentinel}"
    system_reduce = PickleWriter().glob("os", "system").obj((cmd,)).raw(b"R").finish()
    posix_reduce = PickleWriter().glob("posix", "system").obj((cmd,)).raw(b"R").finish()
    eval_reduce = (PickleWriter().glob("builtins", "eval")
                   .obj((f"__import__('os').system('{cmd}')",)).raw(b"R").finish())
    # protocol-4 STACK_GLOBAL
    stack_global = (b"\x80\x04" + b"\x8c\x02os" + b"\x8c\x06system" + b"\x93"
                    + PickleWriter().obj((cmd,)).out[2:] + b"R.")
    # INST opcode (protocol 0): builds os.system(cmd)
    inst = b"(" + PickleWriter().obj(cmd).out[2:] + b"ios\nsystem\n."
    # hostile global nested inside an otherwise valid-looking state dict value
    nested = (PickleWriter().glob("collections", "OrderedDict").raw(b")R(").obj("w")
              .glob("subprocess", "call").obj((["touch", str(sentinel)],)).raw(b"Ru").finish())
    # hostile callable smuggled through a persistent id's storage type
    pid = (PickleWriter().glob("torch._utils", "_rebuild_tensor_v2").raw(b"((").obj("storage")
           .glob("os", "system").obj("0").obj("cpu").obj(1).raw(b"tQ").obj(0).obj((1,)).obj((1,))
           .raw(b"tR").finish())
    return {"os.system": system_reduce, "posix.system": posix_reduce, "builtins.eval": eval_reduce,
            "stack_global": stack_global, "inst": inst, "nested": nested, "persistent_id": pid}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["os.system", "posix.system", "builtins.eval", "stack_global", "inst",
                                  "nested", "persistent_id"])
def test_hostile_pickle_is_refused_and_not_executed(tmp_path, layout, kind):
    sentinel = tmp_path / "PWNED"
    payload = _hostile_pickles(sentinel)[kind]
    path = tmp_path / "evil.pth"
    save_pth(path, {"w": np.ones(2, np.float32)}, legacy=(layout == "legacy"), data_pickle=payload)
    with pytest.raises(RdfiaError) as err:
        read_pth(path)
    assert not sentinel.exists(), "hostile code ran"
    assert str(path) in str(err.value)
    assert "refused" in str(err.value) or "not a valid" in str(err.value)


def test_hostile_global_in_legacy_header_pickle_is_refused(tmp_path):
    """The legacy layout is several pickles; the system-info one is restricted too."""
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    out = PickleWriter().obj(0x1950A86A20F9469CFC6C).finish() + PickleWriter().obj(1001).finish()
    out += PickleWriter().glob("os", "system").obj((f"touch {sentinel}",)).raw(b"R").finish()
    path.write_bytes(out)
    with pytest.raises(RdfiaError, match="os.system"):
        read_pth(path)
    assert not sentinel.exists()


def test_only_the_metadata_attribute_may_be_set(tmp_path):
    path = tmp_path / "attrs.pth"
    payload = (PickleWriter().glob("collections", "OrderedDict").raw(b")R").raw(b"}(")
               .obj("_metadata").obj({}).obj("keys").obj("x").raw(b"ub").finish())
    save_pth(path, {"w": np.ones(1, np.float32)}, data_pickle=payload)
    with pytest.raises(RdfiaError, match="refused.*keys"):
        read_pth(path)


def test_refused_module_is_never_imported(tmp_path, monkeypatch):
    sentinel = tmp_path / "IMPORTED"
    (tmp_path / "rdfia_evil_mod.py").write_text(f"open({str(sentinel)!r}, 'w').close()\nx = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = PickleWriter().glob("rdfia_evil_mod", "x").finish()
    path = tmp_path / "evil.pth"
    save_pth(path, {"w": np.ones(1, np.float32)}, data_pickle=payload)
    with pytest.raises(RdfiaError, match="rdfia_evil_mod.x"):
        read_pth(path)
    assert not sentinel.exists() and "rdfia_evil_mod" not in sys.modules


# ----------------------------------------------------------------------------------------------
# Corrupt and truncated files
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_truncated_files_give_one_clear_error(tmp_path, layout):
    path = tmp_path / "w.pth"
    save_pth(path, {"a": np.arange(100, dtype=np.float32), "b": np.ones((3, 3), np.float32)},
             legacy=(layout == "legacy"))
    full = path.read_bytes()
    for cut in (0, 5, 40, len(full) // 2, len(full) - 30, len(full) - 1):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(full[:cut])
        with pytest.raises(RdfiaError) as err:
            read_pth(bad)
        assert str(bad) in str(err.value), (cut, err.value)


def test_zip_storage_corruption_is_detected_by_crc(tmp_path):
    path = tmp_path / "w.pth"
    save_pth(path, {"a": np.arange(64, dtype=np.float32)})
    raw = bytearray(path.read_bytes())
    name = b"w/data/0"
    at = raw.index(name) + len(name)
    (extra_len,) = struct.unpack("<H", raw[at - len(name) - 2:at - len(name)])
    raw[at + extra_len + 10] ^= 0xFF  # flip a byte inside the storage data
    path.write_bytes(bytes(raw))
    with pytest.raises(RdfiaError, match="corrupt"):
        read_pth(path)


def test_strides_outside_storage_are_refused(tmp_path):
    path = tmp_path / "w.pth"
    save_pth(path, {"a": TensorSpec("s", 5, (4, 4), (4, 1))}, storages={"s": np.zeros(16, np.float32)})
    with pytest.raises(RdfiaError, match="outside its storage"):
        read_pth(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(RdfiaError, match=str(path)):
        read_pth(path)
    plain = tmp_path / "plain.pth"
    plain.write_bytes(PickleWriter().obj({"a": 1}).finish())
    with pytest.raises(RdfiaError, match="magic"):
        read_pth(plain)
    with pytest.raises(RdfiaError, match="no such file"):
        read_pth(tmp_path / "missing.pth")


# ----------------------------------------------------------------------------------------------
# Optional: real torch.save files (torch is a test extra, never required)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reads_real_torch_save(tmp_path, layout):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    sd = net.state_dict()
    base = torch.arange(30, dtype=torch.float32)
    sd["shared.a"] = base[3:9].view(2, 3)
    sd["shared.b"] = base.view(5, 6).t()
    sd["bf16"] = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    sd["long"] = torch.arange(3)
    path = tmp_path / "real.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=(layout == "zip"))
    got = read_pth(path)
    assert list(got) == list(sd)
    for k, v in sd.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        np.testing.assert_array_equal(got[k], want, err_msg=k)
        assert got[k].dtype == want.dtype


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_reads_our_writer(tmp_path, layout):
    torch = pytest.importorskip("torch")
    specs, storages, expected = _sample()
    path = tmp_path / "ours.pth"
    save_pth(path, specs, storages=storages, legacy=(layout == "legacy"))
    loaded = torch.load(path, weights_only=True)
    assert loaded._metadata == {"": {"version": 1}}
    for name, want in expected.items():
        np.testing.assert_array_equal(loaded[name].numpy(), want, err_msg=name)
    # views of one storage share memory after torch.load, as in the original
    assert loaded["view.offset"].untyped_storage().data_ptr() == loaded["view.transposed"].untyped_storage().data_ptr()
