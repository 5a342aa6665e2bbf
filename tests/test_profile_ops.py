"""benchmarks/profile_ops.py: op categories, HLO parsing, and a profile of a tiny jitted convolution."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile_ops as P


def test_hlo_and_torch_categories():
    assert P.hlo_category("convolution") == "convolution"
    assert P.hlo_category("dot") == "matmul"
    assert P.hlo_category("reduce-window") == "reduce"
    assert P.hlo_category("select-and-scatter") == "reduce"
    assert P.hlo_category("transpose") == "transpose-copy"
    assert P.hlo_category("multiply") == "elementwise"
    assert P.hlo_category("while") == "other"
    assert P.hlo_category("custom-call", "__onednn$convolution") == "convolution"
    assert P.torch_category("aten::mkldnn_convolution") == "convolution"
    assert P.torch_category("aten::convolution_backward") == "convolution"
    assert P.torch_category("aten::addmm") == "matmul"
    assert P.torch_category("aten::max_pool2d_with_indices") == "reduce"
    assert P.torch_category("aten::threshold_backward") == "elementwise"
    assert P.torch_category("aten::clamp_min_") == "elementwise"
    assert P.torch_category("aten::cat") == "transpose-copy"
    assert P.torch_category("autograd::engine::evaluate_function: ReluBackward0") == "other"
    assert set(P.CATEGORIES) == {"convolution", "matmul", "elementwise", "reduce", "transpose-copy", "other"}


def _conv_fn():
    def f(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jax.nn.relu(y).transpose(0, 3, 1, 2) * 2.0)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 16), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 32), jnp.float32)
    return jax.jit(f), x, w


def test_parse_hlo_maps_fusions_to_their_main_op():
    fn, x, w = _conv_fn()
    module, ops = P.parse_hlo(fn.lower(x, w).compile().as_text())
    assert module.startswith("jit_")
    convs = [o for o in ops.values() if o.main == "convolution"]
    assert convs and all(o.category == "convolution" for o in convs)
    # every instruction got a known category, fusions one of their fused ops
    assert {o.category for o in ops.values()} <= set(P.CATEGORIES)
    assert all(o.main != "fusion" for o in ops.values())


def test_attribute_time_splits_overlaps_and_spares_containers():
    a, b, loop = ("m", "a"), ("m", "b"), ("m", "while.1")
    ivs = [(0.0, 10.0, loop), (0.0, 4.0, a), (2.0, 6.0, b)]
    t = P.attribute_time(ivs, lambda k: k[1].startswith("while"))
    assert t[a] == pytest.approx(2.0 + 1.0) and t[b] == pytest.approx(1.0 + 2.0)
    assert t[loop] == pytest.approx(4.0)  # only when no body op runs
    assert sum(t.values()) == pytest.approx(10.0)


def test_profile_jax_has_a_convolution_row():
    fn, x, w = _conv_fn()
    run = lambda: fn(x, w).block_until_ready()  # noqa: E731
    run()
    prof = P.profile_jax(run, steps=2, hlo_texts=[fn.lower(x, w).compile().as_text()], workload="tiny")
    cats = prof.by_category()
    assert cats["convolution"] > 0.0
    assert any(r.category == "convolution" and r.detail != "?" for r in prof.rows)
    assert prof.wall_ms > 0 and 0 < prof.total_ms <= 1.5 * prof.wall_ms
    table = prof.table(top=5)
    assert "| convolution |" in table and "wall per iteration" in table


def test_profile_torch_has_a_convolution_row():
    torch = pytest.importorskip("torch", reason="torch not installed: the PyTorch profile is not tested")
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(2, 16, 32, 32)
    run = lambda: conv(x).relu().sum().backward()  # noqa: E731
    run()
    prof = P.profile_torch(run, steps=2, workload="tiny")
    assert prof.by_category()["convolution"] > 0.0
    assert any(r.op == "aten::convolution_backward" for r in prof.rows)


def test_fusion_of_slices_and_maxima_is_elementwise():
    f = jax.jit(lambda x: jnp.maximum(x[:, ::2], x[:, 1::2]) * 3.0)
    _, ops = P.parse_hlo(f.lower(jnp.ones((4, 8), jnp.float32)).compile().as_text())
    fusions = [o for o in ops.values() if o.opcode == "fusion"]
    assert fusions and all(o.category == "elementwise" for o in fusions)
