"""One benchmark harness for every section: rdfia-jax against the PyTorch practical, same inputs.

Each ``benchmarks/workloads_<area>.py`` defines ``workloads() -> list[Workload]``. A workload is one
hot loop in one framework; a JAX and a torch workload with the same ``name`` form one row. Each
framework runs in its own process (no thread-pool or allocator interference), the first call is
timed separately as compile/warm-up time, and the row reports medians and the speed-up
``torch median / jax median`` (> 1: rdfia-jax is faster).

Usage::

    python -m benchmarks.harness run                       # everything, float32, writes RESULTS.md
    python -m benchmarks.harness run --filter vgg16 --precision bfloat16 --no-write
    python -m benchmarks.harness list

Precision: "float32" means full float32 everywhere (JAX matmul precision "highest"; torch with TF32
off), "bfloat16" casts parameters and inputs to bfloat16 in both frameworks.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- harness:begin -->", "<!-- harness:end -->"


@dataclasses.dataclass
class Workload:
    """One hot loop in one framework.

    Attributes:
      name: row name shared by the JAX and torch versions, e.g. "vgg16_infer_b8".
      framework: "jax" or "torch".
      setup: ``setup(precision) -> run_once``; ``run_once()`` runs one iteration and blocks until its
        results are computed (``jax.block_until_ready`` / ``torch.cuda.synchronize``).
      items: items processed by one ``run_once`` (images, steps), for throughput.
      unit: what ``items`` counts.
      section: report section, for grouping.
    """

    name: str
    framework: str
    setup: Callable[[str], Callable[[], object]]
    items: int = 1
    unit: str = "images"
    section: str = ""


def discover(filter_re: str = "") -> list[Workload]:
    found: list[Workload] = []
    for path in sorted(HERE.glob("workloads_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        found.extend(module.workloads())
    pat = re.compile(filter_re) if filter_re else None
    return [w for w in found if pat is None or pat.search(w.name)]


def _time(run: Callable[[], object], min_repeats: int, min_seconds: float) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_seconds and len(times) < 200):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return first, times


#: Set (to "1") in the "torch-compile" worker process: the torch workloads wrap their networks with
#: :func:`torch_compiled`, so the same setups time PyTorch eager and ``torch.compile``. An environment
#: variable, not a module global: the worker runs this file as ``__main__`` while the workloads
#: import ``benchmarks.harness``, a second copy of the module.
TORCH_COMPILE_ENV = "RDFIA_BENCH_TORCH_COMPILE"
#: Set to "retain" in a torch worker to give PyTorch the host-allocator settings rdfia-jax applies to
#: itself (:func:`rdfia_jax.xla.retain_host_memory`), for a comparison on equal allocators.
TORCH_MALLOC_ENV = "RDFIA_BENCH_TORCH_MALLOC"


def torch_compiled(module):
    """``torch.compile(module)`` in the "torch-compile" worker, ``module`` itself otherwise.

    Torch workloads call this on every network they build (the optimizer keeps the original
    module's parameters, which the compiled wrapper shares)."""
    if os.environ.get(TORCH_COMPILE_ENV) != "1":
        return module
    import torch
    return torch.compile(module)


def run_framework(framework: str, filter_re: str, precision: str, repeats: int, seconds: float) -> list[dict]:
    """Run every workload of one framework in this process; returns one dict per workload.

    ``framework`` is "jax", "torch" (eager) or "torch-compile" (the torch workloads with their
    networks wrapped by ``torch.compile``; the first call, timed as compile time, includes Inductor's
    code generation)."""
    workload_framework = "torch" if framework == "torch-compile" else framework
    os.environ[TORCH_COMPILE_ENV] = "1" if framework == "torch-compile" else "0"
    if framework == "jax":
        from rdfia_jax import xla
        xla.retain_host_memory()  # as the CLI does, before JAX starts its threads
        import jax
        jax.config.update("jax_default_matmul_precision", "highest" if precision == "float32" else "default")
        device = jax.devices()[0].device_kind
        kernels = "YNNPACK dot/conv fusions" if xla.compiler_options() else "XLA default kernels"
        malloc = "retained" if xla.retain_host_memory() else "system"
        version = f"jax {jax.__version__}, {kernels}, host malloc {malloc}"
    else:
        malloc = "system"
        if os.environ.get(TORCH_MALLOC_ENV) == "retain":  # before torch starts its threads
            from rdfia_jax import xla
            malloc = "retained" if xla.retain_host_memory() else "system"
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        version = f"torch {torch.__version__} ({torch.get_num_threads()} threads, host malloc {malloc})"
        if framework == "torch-compile":
            version += ", torch.compile (Inductor)"
    rows = []
    for w in discover(filter_re):
        if w.framework != workload_framework:
            continue
        try:
            run = w.setup(precision)
            first, times = _time(run, repeats, seconds)
            med = statistics.median(times)
            rows.append(dict(name=w.name, framework=framework, section=w.section, unit=w.unit, items=w.items,
                             median_s=med, first_s=first, compile_s=max(0.0, first - med), n=len(times),
                             throughput=w.items / med, device=device, version=version, precision=precision))
        except Exception as err:  # a failing workload is reported, the others still run
            rows.append(dict(name=w.name, framework=framework, section=w.section, error=f"{type(err).__name__}: {err}",
                             device=device, version=version, precision=precision))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def pool_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per (workload, framework) from several rounds: the median of the rounds' medians
    (compile time from the first round, where the cold compilation happened)."""
    if len(rounds) == 1:
        return rounds[0]
    pooled: dict[tuple, dict] = {}
    medians: dict[tuple, list[float]] = {}
    for rows in rounds:
        for r in rows:
            key = (r["name"], r["framework"])
            pooled.setdefault(key, dict(r))
            if "median_s" in r:
                medians.setdefault(key, []).append(r["median_s"])
    for key, r in pooled.items():
        if key in medians:
            r["median_s"] = statistics.median(medians[key])
            r["throughput"] = r["items"] / r["median_s"]
            r["rounds"] = len(medians[key])
            r["round_medians_s"] = medians[key]
    return list(pooled.values())


def combine(rows: list[dict]) -> list[dict]:
    by_name: dict[str, dict] = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["framework"]] = r
    table = []

    def ratio(a, b):
        return (b["median_s"] / a["median_s"]) if a and b and "median_s" in a and "median_s" in b else None

    for name, d in by_name.items():
        j, t, tc = d.get("jax"), d.get("torch"), d.get("torch-compile")
        table.append(dict(name=name, jax=j, torch=t, speedup=ratio(j, t), torch_compile=tc,
                          speedup_compile=ratio(j, tc), speedup_rounds=round_ratios(j, t)))
    return table


def round_ratios(a: dict | None, b: dict | None) -> list[float] | None:
    """Per-round speed-ups ``b / a``: rounds alternate the frameworks, so round i's two medians were
    taken minutes apart and their ratio shows how much the machine's drift moves the pooled figure."""
    ra, rb = (a or {}).get("round_medians_s"), (b or {}).get("round_medians_s")
    if not ra or not rb or len(ra) != len(rb):
        return None
    return [y / x for x, y in zip(ra, rb)]


def _fmt(r: dict | None) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return f"error: {r['error'][:60]}"
    return f"{1e3 * r['median_s']:.1f} ms ({r['throughput']:.1f} {r['unit']}/s)"


def to_markdown(table: list[dict], precision: str) -> str:
    any_row = next((r["jax"] or r["torch"] for r in table if r["jax"] or r["torch"]), {})
    jax_v = next((r["jax"]["version"] for r in table if r["jax"]), "-")
    torch_v = next((r[k]["version"] for r in table for k in ("torch", "torch_compile") if r.get(k)), "-")
    compiled = any(r.get("torch_compile") for r in table)
    n_rounds = max((r[k].get("rounds", 1) for r in table for k in ("jax", "torch", "torch_compile") if r.get(k)),
                   default=1)
    rounds_note = f" Each median: the median of {n_rounds} alternating rounds." if n_rounds > 1 else ""
    header = "| workload | rdfia-jax median (throughput) | JAX compile s | PyTorch median (throughput) | speed-up (torch/jax) |"
    if compiled:
        header += " torch.compile median (throughput) | torch.compile s | speed-up (torch.compile/jax) |"
    lines = [f"### {datetime.date.today().isoformat()} - {machine()} - device {any_row.get('device', '?')} - "
             f"precision {precision}", "", f"Versions: {jax_v}; {torch_v}.{rounds_note}", "", header,
             "|" + " --- |" * (header.count("|") - 1)]
    for r in table:
        comp = f"{r['jax']['compile_s']:.1f}" if r["jax"] and "compile_s" in r["jax"] else "-"
        sp = f"**{r['speedup']:.2f}x**" if r["speedup"] else "-"
        if r["speedup"] and r.get("speedup_rounds"):
            sp += f" (rounds {min(r['speedup_rounds']):.2f}-{max(r['speedup_rounds']):.2f})"
        line = f"| {r['name']} | {_fmt(r['jax'])} | {comp} | {_fmt(r['torch'])} | {sp} |"
        if compiled:
            tc = r.get("torch_compile")
            tcomp = f"{tc['compile_s']:.1f}" if tc and "compile_s" in tc else "-"
            spc = f"**{r['speedup_compile']:.2f}x**" if r.get("speedup_compile") else "-"
            line += f" {_fmt(tc)} | {tcomp} | {spc} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_results(md: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text:
        text += "\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    RESULTS.write_text(head + BEGIN + "\n" + md + "\n" + body.lstrip("\n") + END + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "list", "worker"), help="run both frameworks / list workloads")
    ap.add_argument("--filter", default="", help="regular expression on workload names")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"), help="compute precision")
    ap.add_argument("--frameworks", default="jax,torch",
                    help="comma-separated frameworks to run: jax, torch (eager), torch-compile")
    ap.add_argument("--repeats", type=int, default=5, help="minimum timed repeats after warm-up (default 5)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per workload (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every framework this many times, alternating, and report the median of "
                         "the rounds' medians (for a noisy machine)")
    ap.add_argument("--json-out", default=None, help="also write the combined rows as JSON here")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--jax-python", default=sys.executable,
                    help="Python interpreter for the JAX process (e.g. a Python 3.12 venv with jax 0.12)")
    ap.add_argument("--torch-python", default=sys.executable, help="Python interpreter for the PyTorch process")
    ap.add_argument("--torch-host-malloc", choices=("system", "retain"), default="system",
                    help="'retain': give the PyTorch workers the glibc malloc settings rdfia-jax applies to "
                         "itself (rdfia_jax.xla.retain_host_memory), to compare on equal allocators "
                         "(default 'system': PyTorch as users run it)")
    ap.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.command == "list":
        for w in discover(args.filter):
            print(f"{w.section:<10} {w.framework:<6} {w.name}")
        return 0
    if args.command == "worker":
        print(json.dumps(run_framework(args.framework, args.filter, args.precision, args.repeats, args.seconds)))
        return 0
    rounds: list[list[dict]] = []
    for _ in range(args.rounds):  # frameworks alternate, so slow drifts of the machine hit all alike
        rows: list[dict] = []
        for fw in args.frameworks.split(","):
            python = args.jax_python if fw == "jax" else args.torch_python
            proc = subprocess.run([python, "-m", "benchmarks.harness", "worker", "--framework", fw,
                                   "--filter", args.filter, "--precision", args.precision,
                                   "--repeats", str(args.repeats), "--seconds", str(args.seconds)],
                                  cwd=HERE.parent, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, TORCH_MALLOC_ENV: args.torch_host_malloc})
            if proc.returncode != 0:
                print(f"{fw} worker failed (exit {proc.returncode})", file=sys.stderr)
                continue
            rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
        rounds.append(rows)
    table = combine(pool_rounds(rounds))
    md = to_markdown(table, args.precision)
    print(md)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(table, indent=1))
    if not args.no_write:
        write_results(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
