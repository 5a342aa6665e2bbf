"""One benchmark harness for every section: rdfia-jax against the PyTorch practical (and Keras 3), same inputs.

Each ``benchmarks/workloads_<area>.py`` defines ``workloads() -> list[Workload]``. A workload is one
hot loop in one framework; the JAX, torch and Keras workloads with the same ``name`` form one row.
Each framework runs in its own processes (no thread-pool or allocator interference); by default
(``--isolate``) every (workload, framework) pair gets a fresh worker process, so the process's peak
resident memory is that workload's. The first call is timed separately as compile/warm-up time,
and the row reports medians and the speed-ups ``torch median / jax median`` and
``keras median / jax median`` (> 1: rdfia-jax is faster).

Keras (``--frameworks jax,torch,keras``): Keras 3 on the JAX backend, the workloads written as Keras
users write them (``predict_on_batch``, custom ``train_step`` with ``stateless_call``), with the
same host-allocator settings and float32 matmul precision as the rdfia-jax worker.

Memory (isolated runs): per row, "peak" is the worker's peak RSS (``ru_maxrss``), "base" its RSS
after the framework import, before the workload's setup, and "held" its RSS once the workload's
objects are deleted and collected: what the host allocator keeps. ``--jax-host-malloc system``
runs JAX and Keras without :func:`rdfia_jax.xla.retain_host_memory`; the difference in held and
peak memory against the default ``retain`` is what the retained-allocator setting costs.

Usage::

    python -m benchmarks.harness run                       # everything, float32, writes RESULTS.md
    python -m benchmarks.harness run --filter vgg16 --precision bfloat16 --no-write
    python -m benchmarks.harness run --filter dcgan_step --frameworks jax,torch,keras --no-write
    python -m benchmarks.harness run --filter dann_step --jax-host-malloc system --no-write
    python -m benchmarks.harness list

Precision: "float32" means full float32 everywhere (JAX matmul precision "highest"; torch with TF32
off), "bfloat16" casts parameters and inputs to bfloat16 in both frameworks.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import json
import os
import platform
import re
import resource
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
      name: row name shared by the JAX, torch and Keras versions, e.g. "vgg16_infer_b8".
      framework: "jax", "torch" or "keras" (Keras 3 on the JAX backend).
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
#: ``rdfia_jax.xla.MALLOC_ENV_VAR`` (not imported here: that module imports JAX), which
#: :func:`rdfia_jax.xla.retain_host_memory` reads; ``--jax-host-malloc`` sets it in the JAX and Keras workers.
JAX_MALLOC_ENV = "RDFIA_JAX_HOST_MALLOC"
#: The frameworks a worker can run ("torch-compile": the torch workloads under ``torch.compile``).
FRAMEWORKS = ("jax", "torch", "torch-compile", "keras")


def rss_mib() -> float:
    """This process's current resident memory in MiB (``/proc/self/statm``; NaN off Linux)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def torch_compiled(module):
    """``torch.compile(module)`` in the "torch-compile" worker, ``module`` itself otherwise.

    Torch workloads call this on every network they build (the optimizer keeps the original
    module's parameters, which the compiled wrapper shares)."""
    if os.environ.get(TORCH_COMPILE_ENV) != "1":
        return module
    import torch
    return torch.compile(module)


def _start_framework(framework: str, precision: str) -> tuple[str, str]:
    """Imports and configures ``framework`` in this process; returns ``(device, version)``."""
    if framework in ("jax", "keras"):
        from rdfia_jax import xla
        retained = xla.retain_host_memory()  # as the CLI does, before JAX starts its threads
        if framework == "keras":
            os.environ["KERAS_BACKEND"] = "jax"  # before keras is first imported
        import jax
        jax.config.update("jax_default_matmul_precision", "highest" if precision == "float32" else "default")
        device = jax.devices()[0].device_kind
        malloc = "retained" if retained else "system"
        if framework == "keras":
            import keras
            if keras.backend.backend() != "jax":
                raise RuntimeError(f"keras runs on {keras.backend.backend()!r}, not jax (imported before the worker set it?)")
            return device, f"keras {keras.__version__} on jax {jax.__version__}, host malloc {malloc}"
        kernels = "YNNPACK dot/conv fusions" if xla.compiler_options() else "XLA default kernels"
        return device, f"jax {jax.__version__}, {kernels}, host malloc {malloc}"
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
    return device, version


def run_framework(framework: str, filter_re: str, precision: str, repeats: int, seconds: float,
                  isolated: bool = False) -> list[dict]:
    """Run every workload of one framework in this process; returns one dict per workload.

    ``framework`` is "jax", "torch" (eager), "torch-compile" (the torch workloads with their
    networks wrapped by ``torch.compile``; the first call, timed as compile time, includes Inductor's
    code generation) or "keras" (Keras 3 on the JAX backend). ``isolated``: this process runs one
    workload only, so its peak RSS is that workload's (recorded as ``peak_mib``)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
    workload_framework = "torch" if framework == "torch-compile" else framework
    os.environ[TORCH_COMPILE_ENV] = "1" if framework == "torch-compile" else "0"
    device, version = _start_framework(framework, precision)
    rows = []
    for w in discover(filter_re):
        if w.framework != workload_framework:
            continue
        base = rss_mib()
        run = None
        try:
            run = w.setup(precision)
            first, times = _time(run, repeats, seconds)
            med = statistics.median(times)
            row = dict(name=w.name, framework=framework, section=w.section, unit=w.unit, items=w.items,
                       median_s=med, first_s=first, compile_s=max(0.0, first - med), n=len(times),
                       throughput=w.items / med, device=device, version=version, precision=precision)
        except Exception as err:  # a failing workload is reported, the others still run
            row = dict(name=w.name, framework=framework, section=w.section, error=f"{type(err).__name__}: {err}",
                       device=device, version=version, precision=precision)
        del run
        gc.collect()
        row.update(base_mib=base, held_mib=rss_mib(), peak_mib=peak_rss_mib(), isolated=isolated)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
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


MEMORY_KEYS = ("base_mib", "peak_mib", "held_mib")


def pool_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per (workload, framework) from several rounds: the median of the rounds' medians
    (compile time from the first round, where the cold compilation happened; memory figures: the
    median of the rounds')."""
    if len(rounds) == 1:
        return rounds[0]
    pooled: dict[tuple, dict] = {}
    medians: dict[tuple, list[float]] = {}
    memory: dict[tuple, dict[str, list[float]]] = {}
    for rows in rounds:
        for r in rows:
            key = (r["name"], r["framework"])
            pooled.setdefault(key, dict(r))
            if "median_s" in r:
                medians.setdefault(key, []).append(r["median_s"])
            for m in MEMORY_KEYS:
                if m in r:
                    memory.setdefault(key, {}).setdefault(m, []).append(r[m])
    for key, r in pooled.items():
        if key in medians:
            r["median_s"] = statistics.median(medians[key])
            r["throughput"] = r["items"] / r["median_s"]
            r["rounds"] = len(medians[key])
            r["round_medians_s"] = medians[key]
        for m, values in memory.get(key, {}).items():
            r[m] = statistics.median(values)
    return list(pooled.values())


def combine(rows: list[dict]) -> list[dict]:
    by_name: dict[str, dict] = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["framework"]] = r
    table = []

    def ratio(a, b):
        return (b["median_s"] / a["median_s"]) if a and b and "median_s" in a and "median_s" in b else None

    for name, d in by_name.items():
        j, t, tc, k = d.get("jax"), d.get("torch"), d.get("torch-compile"), d.get("keras")
        table.append(dict(name=name, jax=j, torch=t, speedup=ratio(j, t), torch_compile=tc,
                          speedup_compile=ratio(j, tc), speedup_rounds=round_ratios(j, t), keras=k,
                          speedup_keras=ratio(j, k), speedup_keras_rounds=round_ratios(j, k)))
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


def _speedup(value: float | None, rounds: list[float] | None) -> str:
    if not value:
        return "-"
    text = f"**{value:.2f}x**"
    if rounds:
        text += f" (rounds {min(rounds):.2f}-{max(rounds):.2f})"
    return text


def _mib(rows: list[dict | None], key: str) -> str:
    """``"a / b / c"`` of one memory figure for the given framework rows ("-" where absent)."""
    return " / ".join(f"{r[key]:.0f}" if r and key in r and r[key] == r[key] else "-" for r in rows)


#: Table keys of the frameworks that can have a memory figure, in column order.
_MEMORY_FRAMEWORKS = (("jax", "jax"), ("torch", "torch"), ("torch_compile", "torch.compile"), ("keras", "keras"))


def to_markdown(table: list[dict], precision: str) -> str:
    keys = ("jax", "torch", "torch_compile", "keras")
    any_row = next((r[k] for r in table for k in keys if r.get(k)), {})
    jax_v = next((r["jax"]["version"] for r in table if r["jax"]), "-")
    torch_v = next((r[k]["version"] for r in table for k in ("torch", "torch_compile") if r.get(k)), "-")
    keras_v = next((r["keras"]["version"] for r in table if r.get("keras")), None)
    compiled = any(r.get("torch_compile") for r in table)
    with_keras = keras_v is not None
    n_rounds = max((r[k].get("rounds", 1) for r in table for k in keys if r.get(k)), default=1)
    rounds_note = f" Each median: the median of {n_rounds} alternating rounds." if n_rounds > 1 else ""
    mem_fws = [(k, label) for k, label in _MEMORY_FRAMEWORKS
               if any(r.get(k) and r[k].get("isolated") for r in table)]
    versions = f"{jax_v}; {torch_v}" + (f"; {keras_v}" if with_keras else "")
    mem_note = (" Memory: peak / held resident MiB of each workload's own worker process (held: after its "
                "objects are deleted and collected)." if mem_fws else "")
    header = "| workload | rdfia-jax median (throughput) | JAX compile s | PyTorch median (throughput) | speed-up (torch/jax) |"
    if compiled:
        header += " torch.compile median (throughput) | torch.compile s | speed-up (torch.compile/jax) |"
    if with_keras:
        header += " Keras median (throughput) | Keras compile s | speed-up (keras/jax) |"
    if mem_fws:
        labels = " / ".join(label for _, label in mem_fws)
        header += f" peak MiB ({labels}) | held MiB ({labels}) |"
    lines = [f"### {datetime.date.today().isoformat()} - {machine()} - device {any_row.get('device', '?')} - "
             f"precision {precision}", "", f"Versions: {versions}.{rounds_note}{mem_note}", "", header,
             "|" + " --- |" * (header.count("|") - 1)]
    for r in table:
        comp = f"{r['jax']['compile_s']:.1f}" if r["jax"] and "compile_s" in r["jax"] else "-"
        line = f"| {r['name']} | {_fmt(r['jax'])} | {comp} | {_fmt(r['torch'])} | " \
               f"{_speedup(r['speedup'], r.get('speedup_rounds'))} |"
        if compiled:
            tc = r.get("torch_compile")
            tcomp = f"{tc['compile_s']:.1f}" if tc and "compile_s" in tc else "-"
            spc = f"**{r['speedup_compile']:.2f}x**" if r.get("speedup_compile") else "-"
            line += f" {_fmt(tc)} | {tcomp} | {spc} |"
        if with_keras:
            k = r.get("keras")
            kcomp = f"{k['compile_s']:.1f}" if k and "compile_s" in k else "-"
            line += f" {_fmt(k)} | {kcomp} | {_speedup(r.get('speedup_keras'), r.get('speedup_keras_rounds'))} |"
        if mem_fws:
            fw_rows = [r.get(k) if r.get(k) and r[k].get("isolated") else None for k, _ in mem_fws]
            line += f" {_mib(fw_rows, 'peak_mib')} | {_mib(fw_rows, 'held_mib')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_results(md: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text:
        text += "\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    RESULTS.write_text(head + BEGIN + "\n" + md + "\n" + body.lstrip("\n") + END + tail)


def _worker(python: str, framework: str, filter_re: str, args, env: dict[str, str]) -> list[dict] | None:
    """Runs one worker process; its rows, or None (reported on stderr) when it fails."""
    cmd = [python, "-m", "benchmarks.harness", "worker", "--framework", framework, "--filter", filter_re,
           "--precision", args.precision, "--repeats", str(args.repeats), "--seconds", str(args.seconds)]
    cmd.append("--isolate" if args.isolate else "--no-isolate")  # the worker's own default is True
    proc = subprocess.run(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        print(f"{framework} worker failed (exit {proc.returncode}) on filter {filter_re!r}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "list", "worker"), help="run the frameworks / list workloads")
    ap.add_argument("--filter", default="", help="regular expression on workload names")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"), help="compute precision")
    ap.add_argument("--frameworks", default="jax,torch",
                    help="comma-separated frameworks to run: jax, torch (eager), torch-compile, keras "
                         "(Keras 3 on the JAX backend)")
    ap.add_argument("--repeats", type=int, default=5, help="minimum timed repeats after warm-up (default 5)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per workload (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every framework this many times, alternating, and report the median of "
                         "the rounds' medians (for a noisy machine)")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                    help="one worker process per (workload, framework), so each row's peak memory is its "
                         "own (default); --no-isolate: one process per framework, no memory columns")
    ap.add_argument("--json-out", default=None, help="also write the combined rows as JSON here")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--jax-python", default=sys.executable,
                    help="Python interpreter for the JAX process (e.g. a Python 3.12 venv with jax 0.12)")
    ap.add_argument("--torch-python", default=sys.executable, help="Python interpreter for the PyTorch process")
    ap.add_argument("--keras-python", default=sys.executable, help="Python interpreter for the Keras process")
    ap.add_argument("--torch-host-malloc", choices=("system", "retain"), default="system",
                    help="'retain': give the PyTorch workers the glibc malloc settings rdfia-jax applies to "
                         "itself (rdfia_jax.xla.retain_host_memory), to compare on equal allocators "
                         "(default 'system': PyTorch as users run it)")
    ap.add_argument("--jax-host-malloc", choices=("system", "retain"), default="retain",
                    help="host malloc of the JAX and Keras workers: 'retain' (default, as the rdfia-jax CLI "
                         "runs) or 'system' (glibc defaults), to measure what retention costs in memory")
    ap.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.command == "list":
        for w in discover(args.filter):
            print(f"{w.section:<10} {w.framework:<6} {w.name}")
        return 0
    if args.command == "worker":
        print(json.dumps(run_framework(args.framework, args.filter, args.precision, args.repeats, args.seconds,
                                       isolated=args.isolate)))
        return 0
    frameworks = [fw.strip() for fw in args.frameworks.split(",") if fw.strip()]
    unknown = [fw for fw in frameworks if fw not in FRAMEWORKS]
    if unknown:
        ap.error(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    pythons = {"jax": args.jax_python, "keras": args.keras_python}
    def env_for(fw: str) -> dict[str, str]:
        if fw in ("jax", "keras"):
            return {**os.environ, JAX_MALLOC_ENV: args.jax_host_malloc}
        return {**os.environ, TORCH_MALLOC_ENV: args.torch_host_malloc, JAX_MALLOC_ENV: "retain"}

    available = {(w.name, "torch-compile" if w.framework == "torch" else w.framework) for w in discover(args.filter)}
    available |= {(w.name, w.framework) for w in discover(args.filter)}
    if args.isolate:  # one worker per (workload, framework), workloads in discovery order
        names = list(dict.fromkeys(w.name for w in discover(args.filter)))
        jobs = [(f"^{re.escape(name)}$", name) for name in names]
    else:
        jobs = [(args.filter, None)]
    rounds: list[list[dict]] = []
    for _ in range(args.rounds):  # frameworks alternate, so slow drifts of the machine hit all alike
        rows: list[dict] = []
        for filter_re, name in jobs:
            for fw in frameworks:
                if name is not None and (name, fw) not in available:
                    continue  # this framework has no such workload: no process to start
                rows.extend(_worker(pythons.get(fw, args.torch_python), fw, filter_re, args, env_for(fw)) or [])
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
