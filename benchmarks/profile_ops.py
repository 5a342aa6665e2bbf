"""Op-level profile of one harness workload, in the same table for JAX and PyTorch.

Runs a workload's ``run_once`` (``benchmarks.harness.discover(name)`` -> ``Workload.setup(precision)``)
under a profiler and prints where one iteration's time goes, op by op, each op with a category
(convolution / matmul / elementwise / reduce / transpose-copy / other), its milliseconds per
iteration and its share, plus a per-category summary and the wall time per iteration, so the
table's sum can be compared with the wall.

* JAX: ``jax.profiler.trace`` writes a Perfetto ``*.trace.json.gz``; every XLA:CPU thunk is an
  event whose ``args`` name its HLO module and instruction (``convolution.12``, ``fusion.3``,
  ``wrapped_reduce-window``). The compiled HLO text of each module (dumped with ``--xla_dump_to``
  when this script starts JAX, or given to :func:`profile_jax`) maps an instruction to its opcode
  and, for a fusion, to the ops it fuses. An execution lasts from its thunk's event to the matching
  ``end: <op>`` event (convolutions and dots run asynchronously); each moment is split among the ops
  running then (:func:`attribute_time`), so the op times add up to the busy time, below the wall.
* PyTorch: ``torch.profiler.profile(activities=[CPU])``, ``key_averages()`` by aten op, self CPU time
  (the op's time on its calling thread, intra-op threads included in that wall span).

Usage::

    python -m benchmarks.profile_ops saliency_squeezenet1_1_b5 --framework jax --steps 3
    python -m benchmarks.profile_ops saliency_squeezenet1_1_b5 --framework torch --json-out /tmp/p.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

CATEGORIES = ("convolution", "matmul", "elementwise", "reduce", "transpose-copy", "other")

# HLO opcodes by category; a fusion takes the category of its highest-priority fused opcode.
_HLO_PRIORITY = (
    ("convolution", ("convolution",)),
    ("matmul", ("dot", "ragged-dot")),
    ("reduce", ("select-and-scatter", "scatter", "reduce-window", "reduce", "sort", "gather", "all-reduce")),
    ("transpose-copy", ("transpose", "copy", "concatenate", "pad", "slice", "dynamic-slice",
                        "dynamic-update-slice", "reverse", "reshape", "bitcast", "copy-start", "copy-done")),
    ("other", ("while", "call", "conditional", "custom-call", "infeed", "outfeed", "rng", "rng-bit-generator",
               "after-all", "tuple", "get-tuple-element", "parameter", "constant")),
)
_HLO_CATEGORY = {op: cat for cat, ops in _HLO_PRIORITY for op in ops}
_FUSED_INDEXING = ("slice", "dynamic-slice", "pad", "reshape", "broadcast", "iota")
_HLO_RANK = {op: i for i, (_, ops) in enumerate(_HLO_PRIORITY) for op in ops}


def hlo_category(opcode: str, custom_target: str = "") -> str:
    """Category of one HLO opcode (elementwise for arithmetic, compare, select, broadcast, iota ...)."""
    if opcode == "custom-call":
        t = custom_target.lower()
        return "convolution" if "conv" in t else "matmul" if ("matmul" in t or "gemm" in t or "dot" in t) else "other"
    return _HLO_CATEGORY.get(opcode, "elementwise")


_TORCH_MATMUL = {"addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "addmv", "mv", "dot", "einsum"}
_TORCH_REDUCE = ("pool", "sum", "mean", "amax", "amin", "max", "min", "norm", "softmax", "argmax", "argmin",
                 "scatter", "gather", "index", "cumsum", "prod", "var", "std", "sort", "topk")
_TORCH_COPY = {"copy_", "contiguous", "cat", "clone", "permute", "transpose", "stack", "constant_pad_nd", "pad",
               "roll", "flip", "slice", "select", "narrow", "view", "reshape", "expand", "to", "_to_copy", "t",
               "unfold", "split", "chunk", "as_strided", "squeeze", "unsqueeze", "flatten", "_reshape_alias",
               "copy", "_copy_from", "slice_backward", "select_backward", "as_strided_"}
_TORCH_OTHER = {"empty", "empty_like", "empty_strided", "resize_", "detach", "detach_", "set_", "item",
                "_local_scalar_dense", "lift_fresh", "alias", "result_type", "ones_like", "new_empty_strided"}


def torch_category(name: str) -> str:
    """Category of one profiler key (``aten::mkldnn_convolution``, ``aten::addmm``, ``autograd::engine...``)."""
    if not name.startswith("aten::"):
        return "other"  # autograd nodes, record_function ranges: their self time is framework overhead
    n = name[len("aten::"):].lower()
    if "conv" in n:
        return "convolution"
    if n in _TORCH_MATMUL or "gemm" in n:
        return "matmul"
    if n in _TORCH_COPY:
        return "transpose-copy"
    if n in _TORCH_OTHER:
        return "other"
    if not n.startswith(("maximum", "minimum", "clamp")) and any(k in n for k in _TORCH_REDUCE):
        return "reduce"
    return "elementwise"


# ----------------------------------------------------------------------------- HLO text


_COMP_RE = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-_]*)\((.*)$")
_CALLS_RE = re.compile(r"\b(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-, %]+)\}?")
_TARGET_RE = re.compile(r'custom_call_target="([^"]+)"')


@dataclasses.dataclass
class HloOp:
    """One instruction of a compiled module: its opcode, the opcode that names its category (for a
    fusion: the highest-priority op it fuses) and the category."""

    name: str
    opcode: str
    main: str
    category: str
    shape: str = ""  # the main op's result shape, and a convolution's window and dimension labels


def parse_hlo(text: str) -> tuple[str, dict[str, HloOp]]:
    """(module name, instruction name -> :class:`HloOp`) of one ``as_text()`` / dumped HLO module."""
    module = ""
    m = re.search(r"^HloModule\s+([\w.\-]+)", text, re.M)
    if m:
        module = m.group(1)
    comps: dict[str, list[tuple[str, str, list[str], str, str]]] = {}
    current: list | None = None
    for line in text.splitlines():
        cm = _COMP_RE.match(line)
        if cm and not line.lstrip().startswith("%param"):
            current = comps.setdefault(cm.group(2), [])
            continue
        if line.strip() == "}":
            current = None
            continue
        im = _INSTR_RE.match(line)
        if im and current is not None:
            name, shape, opcode, rest = im.groups()
            shape = re.sub(r"\{[^}]*\}", "", shape).strip()
            if opcode == "convolution":
                shape += " " + " ".join(re.findall(r"\b(?:window=\{[^}]*\}|dim_labels=\S+?)(?=[,\s]|$)", rest))
            called = []
            for c in _CALLS_RE.findall(rest):
                called.extend(x.strip().lstrip("%") for x in c.split(",") if x.strip())
            tm = _TARGET_RE.search(rest)
            current.append((name, opcode, called, tm.group(1) if tm else "", shape))

    def fused_ops(comp: str, seen: set[str]) -> list[tuple[str, str, str]]:
        if comp in seen or comp not in comps:
            return []
        seen.add(comp)
        out = []
        for _, opcode, called, target, shape in comps[comp]:
            out.append((opcode, target, shape))
            if opcode in ("fusion",):
                for c in called:
                    out.extend(fused_ops(c, seen))
        return out

    ops: dict[str, HloOp] = {}
    for instrs in comps.values():
        for name, opcode, called, target, shape in instrs:
            main, tgt = opcode, target
            if opcode == "fusion":
                inner = [o for c in called for o in fused_ops(c, set())]
                inner = [o for o in inner if o[0] not in ("parameter", "constant", "tuple", "get-tuple-element",
                                                          "bitcast")]
                # inside a loop fusion, slices, pads and broadcasts are index arithmetic: a fusion of
                # slices and maxima is elementwise work, one of slices alone a copy
                work = [o for o in inner if o[0] not in _FUSED_INDEXING]
                inner = work or inner
                if inner:
                    # the highest-priority fused op; among elementwise ones the last (the root)
                    main, tgt, shape = min(reversed(inner),
                                           key=lambda o: _HLO_RANK.get(o[0], len(_HLO_PRIORITY) - 1.5))
            ops[name] = HloOp(name, opcode, main, hlo_category(main, tgt), shape)
    return module, ops


def guess_category(name: str) -> str:
    """Category from a thunk name alone (no HLO text for its module), e.g. ``convolution.12``."""
    base = re.sub(r"\.\d+$", "", name).lower()
    for key, cat in (("conv", "convolution"), ("dot", "matmul"), ("reduce", "reduce"), ("scatter", "reduce"),
                     ("transpose", "transpose-copy"), ("copy", "transpose-copy"), ("concatenate", "transpose-copy"),
                     ("pad", "transpose-copy"), ("slice", "transpose-copy"), ("while", "other")):
        if key in base:
            return cat
    return "other"


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Row:
    op: str
    category: str
    detail: str
    ms: float
    calls: float


@dataclasses.dataclass
class Profile:
    framework: str
    workload: str
    steps: int
    wall_ms: float          # per iteration, while profiling
    wall_unprofiled_ms: float | None
    rows: list[Row]

    @property
    def total_ms(self) -> float:
        return sum(r.ms for r in self.rows)

    def by_category(self) -> dict[str, float]:
        out = {c: 0.0 for c in CATEGORIES}
        for r in self.rows:
            out[r.category] = out.get(r.category, 0.0) + r.ms
        return out

    def to_dict(self) -> dict:
        return dict(framework=self.framework, workload=self.workload, steps=self.steps, wall_ms=self.wall_ms,
                    wall_unprofiled_ms=self.wall_unprofiled_ms, total_ms=self.total_ms,
                    by_category=self.by_category(), rows=[dataclasses.asdict(r) for r in self.rows])

    def table(self, top: int = 25) -> str:
        total = self.total_ms or 1.0
        rows = sorted(self.rows, key=lambda r: -r.ms)
        lines = [f"## {self.workload} - {self.framework} - {self.steps} profiled iterations",
                 "", f"wall per iteration: {self.wall_ms:.1f} ms while profiling"
                 + (f", {self.wall_unprofiled_ms:.1f} ms without the profiler" if self.wall_unprofiled_ms else "")
                 + f"; sum of op times: {self.total_ms:.1f} ms ({100 * self.total_ms / max(self.wall_ms, 1e-9):.0f} %"
                 " of the profiled wall)", "",
                 "| category | ms / iteration | share |", "| --- | ---: | ---: |"]
        for cat, ms in sorted(self.by_category().items(), key=lambda kv: -kv[1]):
            if ms > 0:
                lines.append(f"| {cat} | {ms:.2f} | {100 * ms / total:.1f} % |")
        lines += ["", "| op | category | detail | calls / it | ms / iteration | share |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]
        for r in rows[:top]:
            lines.append(f"| {r.op} | {r.category} | {r.detail} | {r.calls:g} | {r.ms:.2f} | {100 * r.ms / total:.1f} % |")
        rest = rows[top:]
        if rest:
            ms = sum(r.ms for r in rest)
            lines.append(f"| ({len(rest)} more ops) | | | | {ms:.2f} | {100 * ms / total:.1f} % |")
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- JAX


_CONTAINERS = ("while", "call", "conditional")


def _intervals(events: list[dict]) -> list[tuple[float, float, tuple[str, str]]]:
    """(start, end, (module, op)) of every thunk execution.

    A thunk's event covers only its launch when the work is asynchronous (convolutions and dots
    handed to YNNPACK / Eigen return at once); the runtime marks completion with an ``end: <op>``
    event, so an execution lasts from its event's start to the first matching ``end:`` after it
    (or to its event's end, if later or if there is none)."""
    ends: dict[str, list[float]] = collections.defaultdict(list)
    starts = []
    for e in events:
        if e.get("ph") != "X":
            continue
        if "hlo_op" in e.get("args", {}):
            starts.append(e)
        elif e.get("name", "").startswith("end: "):
            ends[e["name"][5:]].append(e["ts"] + e["dur"])
    for v in ends.values():
        v.sort()
    used = collections.Counter()
    out = []
    for e in sorted(starts, key=lambda e: e["ts"]):
        op = e["args"]["hlo_op"]
        end = e["ts"] + e["dur"]
        cand = ends.get(op, [])
        i = used[op]
        while i < len(cand) and cand[i] < e["ts"]:
            i += 1
        if i < len(cand):
            end = max(end, cand[i])
            i += 1
        used[op] = i
        out.append((e["ts"], end, (e["args"].get("hlo_module", ""), op)))
    return out


def attribute_time(intervals: list[tuple[float, float, tuple[str, str]]],
                   is_container: Callable[[tuple[str, str]], bool]) -> dict[tuple[str, str], float]:
    """Elapsed time per op: each moment is split evenly among the ops running then (containers such
    as a ``while`` thunk get only the moments when none of their body ops runs), so the ops' times
    add up to the time anything ran, comparable with the wall."""
    points = []
    for i, (a, b, _) in enumerate(intervals):
        points.append((a, 1, i))
        points.append((b, 0, i))
    points.sort()
    active: set[int] = set()
    acc: dict[tuple[str, str], float] = collections.defaultdict(float)
    last = None
    for t, kind, i in points:
        if last is not None and t > last and active:
            leaves = [j for j in active if not is_container(intervals[j][2])]
            if leaves:
                share = (t - last) / len(leaves)
                for j in leaves:
                    acc[intervals[j][2]] += share
            else:
                acc[intervals[max(active, key=lambda j: intervals[j][0])][2]] += t - last
        last = t
        (active.add if kind else active.discard)(i)
    return acc


def parse_jax_trace(trace_dir: str | Path, hlo: dict[str, dict[str, HloOp]], steps: int) -> list[Row]:
    """Rows (ms per iteration) from the ``*.trace.json.gz`` under ``trace_dir``."""
    files = sorted(glob.glob(str(Path(trace_dir) / "**" / "*.trace.json.gz"), recursive=True))
    if not files:
        raise RuntimeError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[-1], "rt") as f:
        data = json.load(f)
    intervals = _intervals(data.get("traceEvents", []))

    def info(key: tuple[str, str]) -> HloOp | None:
        return hlo.get(key[0], {}).get(key[1])

    def is_container(key: tuple[str, str]) -> bool:
        i = info(key)
        return i.opcode in _CONTAINERS if i else key[1].startswith(_CONTAINERS)

    times = attribute_time(intervals, is_container)
    calls = collections.Counter(k for _, _, k in intervals)
    modules = {k[0] for k in calls}
    rows = []
    for key, n in calls.items():
        i = info(key)
        cat = i.category if i else guess_category(key[1])
        detail = ((i.opcode if i.opcode == i.main else f"{i.opcode}:{i.main}") + (f" {i.shape}" if i.shape else "")
                  if i else "?")
        name = key[1] if len(modules) <= 1 else f"{key[0]}/{key[1]}"
        rows.append(Row(name, cat, detail, times.get(key, 0.0) / 1e3 / steps, n / steps))
    return rows


def hlo_from_dump(dump_dir: str | Path) -> dict[str, dict[str, HloOp]]:
    """Module name -> instructions, from the ``*cpu_after_optimizations.txt`` files XLA dumped."""
    out: dict[str, dict[str, HloOp]] = {}
    for path in sorted(glob.glob(str(Path(dump_dir) / "*after_optimizations.txt"))):
        module, ops = parse_hlo(Path(path).read_text())
        for k, v in ops.items():
            out.setdefault(module, {}).setdefault(k, v)
    return out


def profile_jax(run: Callable[[], object], steps: int = 3, hlo_texts: Iterable[str] = (),
                dump_dir: str | None = None, workload: str = "") -> Profile:
    """Profile ``steps`` calls of ``run`` (already warmed up) with ``jax.profiler.trace``.

    Args:
      run: one iteration, blocking until its results exist.
      steps: iterations traced.
      hlo_texts: compiled HLO texts (``jit(f).lower(...).compile().as_text()``) of the modules run.
      dump_dir: an XLA ``--xla_dump_to`` folder holding them instead.
    """
    import jax

    hlo: dict[str, dict[str, HloOp]] = hlo_from_dump(dump_dir) if dump_dir else {}
    for text in hlo_texts:
        module, ops = parse_hlo(text)
        hlo.setdefault(module, {}).update(ops)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    unprof = (time.perf_counter() - t0) / steps
    with tempfile.TemporaryDirectory(prefix="profile_ops_") as tmp:
        with jax.profiler.trace(tmp):
            t0 = time.perf_counter()
            for _ in range(steps):
                run()
            wall = (time.perf_counter() - t0) / steps
        rows = parse_jax_trace(tmp, hlo, steps)
    return Profile("jax", workload, steps, 1e3 * wall, 1e3 * unprof, rows)


# ----------------------------------------------------------------------------- torch


def profile_torch(run: Callable[[], object], steps: int = 3, workload: str = "") -> Profile:
    """Profile ``steps`` calls of ``run`` with ``torch.profiler`` (CPU activities), self time per aten op."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    unprof = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        wall = (time.perf_counter() - t0) / steps
    rows = []
    for ev in prof.key_averages():
        us = ev.self_cpu_time_total
        if us <= 0:
            continue
        rows.append(Row(ev.key, torch_category(ev.key), "aten" if ev.key.startswith("aten::") else "-",
                        us / 1e3 / steps, ev.count / steps))
    return Profile("torch", workload, steps, 1e3 * wall, 1e3 * unprof, rows)


# ----------------------------------------------------------------------------- CLI


def _setup_jax(precision: str) -> None:
    from rdfia_jax import xla
    xla.retain_host_memory()  # as the harness's JAX worker
    import jax
    jax.config.update("jax_default_matmul_precision", "highest" if precision == "float32" else "default")


def _setup_torch() -> None:
    from benchmarks.harness import TORCH_MALLOC_ENV
    if os.environ.get(TORCH_MALLOC_ENV) == "retain":
        from rdfia_jax import xla
        xla.retain_host_memory()
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_ops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", help="harness workload name (python -m benchmarks.harness list)")
    ap.add_argument("--framework", choices=("jax", "torch"), default="jax")
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--steps", type=int, default=3, help="profiled iterations (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    ap.add_argument("--top", type=int, default=25, help="ops listed (default 25)")
    ap.add_argument("--json-out", default=None, help="also write the profile as JSON here")
    args = ap.parse_args(argv)

    dump = None
    if args.framework == "jax":
        if "jax" in sys.modules:
            print("note: JAX already imported, no HLO dump; categories guessed from names", file=sys.stderr)
        else:
            dump = tempfile.mkdtemp(prefix="profile_ops_hlo_")
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()
        _setup_jax(args.precision)
    else:
        _setup_torch()
    from benchmarks.harness import discover

    found = [w for w in discover(f"^{re.escape(args.workload)}$") if w.framework == args.framework]
    if not found:
        print(f"no {args.framework} workload named {args.workload!r}", file=sys.stderr)
        return 2
    w = found[0]
    run = w.setup(args.precision)
    for _ in range(max(1, args.warmup)):
        run()
    if args.framework == "jax":
        prof = profile_jax(run, args.steps, dump_dir=dump, workload=w.name)
        if dump:
            import shutil
            shutil.rmtree(dump, ignore_errors=True)
    else:
        prof = profile_torch(run, args.steps, workload=w.name)
    print(prof.table(args.top))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(prof.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
