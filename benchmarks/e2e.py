"""Whole runs, end to end: rdfia-jax's commands against the PyTorch practical's loops on the same data.

The harness (``benchmarks.harness``) times one hot step; this times what a user waits for: loading,
training, evaluation, checkpoints and the final numbers, as each side's command does them.

* ``dann``: 20 epochs of DANN, MNIST -> MNIST-M, seed 0, lr annealed per epoch (the notebook's):
  ``rdfia-jax dann dann --lr-per-epoch --no-figures`` against ``benchmarks/dann_torch_reference.py``.
* ``dcgan``: 5 epochs of the DCGAN on MNIST (2,345 steps), then the same classifier score of the same
  number of samples: ``rdfia-jax gan`` against ``benchmarks/gan_torch_reference.py``.
* ``transfer``: VGG16 relu7 features of all 4,485 15 Scene images (batch 8, the practical's), then a
  LinearSVC: ``rdfia-jax transfer --rows relu7-resize`` against
  ``benchmarks/transfer_torch_reference.py``, both loading the SAME VGG16 file (random weights written
  once by the torch script: the cost of a forward pass does not depend on the values, and equal
  features give both SVMs the same problem).

Modes:
* ``pair`` (default): each workload's two runs start together, each pinned to its own core
  (``taskset``) with one thread. Equal settings, and whatever else the machine does in that window
  falls on both alike; the runs take about twice as long as on two cores.
* ``sequential``: one run after the other, each with ``--threads`` threads on every core.

Each finished run is written at once (atomically) to ``OUT/e2e.json`` with its wall time, CPU time, peak
resident memory (``wait4``'s ``ru_maxrss``) and the run's own quality numbers (so equal work can be
checked); a rerun skips finished runs, so nothing measured is lost on a kill. A killed run's
folder is deleted and the run starts over: a resumed run's wall time is not one run's.

    python -m benchmarks.e2e run --data-dir ../shared/data --out runs/e2e            # everything (hours)
    python -m benchmarks.e2e run --data-dir ../shared/data --out /tmp/e2e --smoke     # a 2-minute check
    python -m benchmarks.e2e table --out runs/e2e                                    # the markdown table
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOADS = ("dann", "dcgan", "transfer")
FRAMEWORKS = ("jax", "torch")
#: The quality numbers shown beside the times (flattened keys of each side's summary file).
NUMBERS = {"dann": ("steps", "source_acc", "target_acc"),
           "dcgan": ("steps", "score.confidence", "score.coverage", "score.frechet"),
           "transfer": ("accuracy", "test_accuracy", "n_train", "n_test")}


@dataclasses.dataclass(frozen=True)
class Run:
    """One side of one workload: the command and where it writes."""

    workload: str
    framework: str
    argv: tuple[str, ...]
    out: Path
    summary: str  # glob (relative to out) of the file holding the run's own numbers

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.framework}"


def _cli(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "rdfia_jax.cli", *args)


def _script(name: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, str(HERE / name), *args)


def weights_file(out: Path) -> Path:
    """The shared VGG16 file of the transfer workload (torchvision layout, written by the torch script)."""
    return out / "shared" / "vgg16_random_seed0.pth"


def plan(workload: str, data_dir: Path, out: Path, threads: int, smoke: bool) -> list[Run]:
    """The two runs of ``workload`` (rdfia-jax first)."""
    t = str(threads)
    o = {fw: out / workload / fw for fw in FRAMEWORKS}
    if workload == "dann":
        pair = ("--dataset-pair", "digits", "--epochs", "1") if smoke else ("--data-dir", str(data_dir))
        jax = _cli("dann", "dann", "--lr-per-epoch", "--no-figures", "--out", str(o["jax"]), *pair)
        torch = _script("dann_torch_reference.py", "--threads", t, "--out", str(o["torch"]), *pair)
        return [Run(workload, "jax", jax, o["jax"], "dann-lr-per-epoch*/seed0/result.json"),
                Run(workload, "torch", torch, o["torch"], "summary.json")]
    if workload == "dcgan":
        data = (("--dataset", "digits", "--epochs", "1", "--score-samples", "200") if smoke else
                ("--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "5", "--score-samples", "10000"))
        jax = _cli("gan", "--out", str(o["jax"]), *data)
        torch = _script("gan_torch_reference.py", "--kind", "gan", "--threads", t, "--out", str(o["torch"]), *data)
        return [Run(workload, "jax", jax, o["jax"], "summary.json"),
                Run(workload, "torch", torch, o["torch"], "summary.json")]
    if workload == "transfer":
        scene = data_dir / "15SceneData"
        sub = ("--per-class", "2") if smoke else ()
        w = str(weights_file(out))
        jax = _cli("transfer", "--data", str(scene), "--rows", "relu7-resize", "--weights", f"vgg16={w}",
                   "--no-cache", "--batch-size", "8", "--out", str(o["jax"]), *sub)
        torch = _script("transfer_torch_reference.py", "--data", str(scene), "--weights", w, "--batch-size", "8",
                        "--threads", t, "--out", str(o["torch"]), *sub)
        return [Run(workload, "jax", jax, o["jax"], "details.json"),
                Run(workload, "torch", torch, o["torch"], "summary.json")]
    raise ValueError(f"unknown workload {workload!r}")


def prepare(workload: str, data_dir: Path, out: Path, smoke: bool) -> None:
    """Untimed set-up shared by both sides, so neither pays for a cache the other then reads:
    MNIST-M is built and the GAN score's classifier trained once here, the transfer weights written."""
    if workload == "dann" and not smoke:
        subprocess.run([sys.executable, "-c", "import sys; from rdfia_jax.dann.domains import load_domains; "
                        "load_domains('mnist', data_dir=sys.argv[1])", str(data_dir)], check=True, cwd=ROOT)
    elif workload == "dcgan":
        ds = "digits" if smoke else "mnist"
        subprocess.run([sys.executable, "-c", "import sys; from rdfia_jax.gan.score import make_scorer; "
                        "make_scorer(sys.argv[1], data_dir=sys.argv[2])", ds, str(data_dir)], check=True, cwd=ROOT)
    elif workload == "transfer" and not weights_file(out).exists():
        subprocess.run(list(_script("transfer_torch_reference.py", "--make-weights", str(weights_file(out)),
                                    "--seed", "0")), check=True, cwd=ROOT)


def launch(run: Run, log: Path, cpu: int | None, threads: int) -> subprocess.Popen:
    """Start ``run`` (pinned to ``cpu`` when given), its output going to ``log``."""
    if run.out.exists():  # a killed run starts over: its wall time must be one uninterrupted run's
        shutil.rmtree(run.out)
    argv = list(run.argv)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def reap(procs: dict[int, float]) -> tuple[int, dict]:
    """Wait for whichever of ``procs`` (pid -> start time) ends first; returns its pid and measurements:
    exit status, wall seconds, its CPU seconds and peak resident memory (MiB)."""
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid in procs:
            break
    return pid, dict(rc=os.waitstatus_to_exitcode(status), wall_s=round(time.perf_counter() - procs.pop(pid), 1),
                     cpu_s=round(usage.ru_utime + usage.ru_stime, 1), peak_mib=round(usage.ru_maxrss / 1024, 1))


def _numbers(run: Run) -> dict:
    """The run's own quality numbers (accuracies, scores), to show that both sides did the same work."""
    paths = sorted(run.out.glob(run.summary))
    try:
        data = json.loads(paths[0].read_text())
    except (IndexError, OSError, ValueError):
        return {}
    if isinstance(data, dict) and isinstance(data.get("rows"), dict):  # rdfia-jax transfer's details.json
        first = next(iter(data["rows"].values()), {})
        data = {**{k: v for k, v in data.items() if k != "rows"}, **first}
    keep = NUMBERS[run.workload]
    flat: dict = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif prefix + k in keep and isinstance(v, (int, float)):
                flat[prefix + k] = v
    if isinstance(data, dict):
        walk(data)
    return flat


def load_results(out: Path) -> dict:
    path = out / "e2e.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(out: Path, results: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from rdfia_jax.fileio import atomic_write_bytes

    atomic_write_bytes(out / "e2e.json", (json.dumps(results, indent=1) + "\n").encode())


def commit() -> str:
    """The checkout's commit (with "+changes" when the tree differs from it): which code a run timed."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def record(out: Path, results: dict, run: Run, measured: dict, mode: str, threads: int, cpu: int | None,
           code: str) -> None:
    results[run.key] = dict(measured, workload=run.workload, framework=run.framework, mode=mode, threads=threads,
                            cpu=cpu, command=" ".join(run.argv[1:]), numbers=_numbers(run), commit=code,
                            date=datetime.datetime.now().isoformat(timespec="seconds"),
                            load_after=round(os.getloadavg()[0], 2))
    save_results(out, results)
    print(f"[e2e] {run.key}: rc {measured['rc']}, {measured['wall_s']} s wall, {measured['cpu_s']} s CPU, "
          f"peak {measured['peak_mib']} MiB", flush=True)


def run_workload(workload: str, args, results: dict) -> None:
    runs = [r for r in plan(workload, args.data_dir, args.out, args.threads if args.mode == "sequential" else 1,
                            args.smoke) if f"{r.workload}/{r.framework}" not in results or args.force]
    if not runs:
        print(f"[e2e] {workload}: finished earlier, kept (--force reruns it)", flush=True)
        return
    print(f"[e2e] {workload}: preparing (untimed)", flush=True)
    prepare(workload, args.data_dir, args.out, args.smoke)
    logs = args.out / "logs"
    code = commit()
    if args.mode == "pair":
        started, by_pid = {}, {}
        for cpu, run in enumerate(runs):
            print(f"[e2e] {run.key}: start on cpu {cpu}, 1 thread", flush=True)
            proc = launch(run, logs / f"{workload}-{run.framework}.log", cpu, 1)
            started[proc.pid], by_pid[proc.pid] = time.perf_counter(), (run, cpu)
        while started:  # each run's wall time ends when IT ends, not when its partner does
            pid, measured = reap(started)
            run, cpu = by_pid[pid]
            record(args.out, results, run, measured, "pair", 1, cpu, code)
    else:
        for run in runs:
            print(f"[e2e] {run.key}: start, {args.threads} threads", flush=True)
            proc = launch(run, logs / f"{workload}-{run.framework}.log", None, args.threads)
            _, measured = reap({proc.pid: time.perf_counter()})
            record(args.out, results, run, measured, "sequential", args.threads, None, code)


def to_markdown(results: dict) -> str:
    lines = ["| workload | mode | rdfia-jax wall | PyTorch wall | speed-up (torch/jax) | CPU s jax / torch | "
             "peak MiB jax / torch | numbers jax | numbers torch |", "|" + " --- |" * 9]
    for w in WORKLOADS:
        j, t = results.get(f"{w}/jax"), results.get(f"{w}/torch")
        if not j and not t:
            continue

        def wall(r):
            if not r:
                return "-"
            return f"{r['wall_s'] / 60:.1f} min" + ("" if r["rc"] == 0 else f" (exit {r['rc']})")

        ok = j and t and j["rc"] == 0 and t["rc"] == 0
        sp = f"**{t['wall_s'] / j['wall_s']:.2f}x**" if ok else "-"

        def nums(r):
            return ", ".join(f"{k} {int(v):,}" if float(v).is_integer() else f"{k} {v:.4g}"
                             for k, v in (r or {}).get("numbers", {}).items()) or "-"
        mode = (j or t)["mode"] + ("" if (j or t)["mode"] == "sequential" else ", 1 core each")
        lines.append(f"| {w} | {mode} | {wall(j)} | {wall(t)} | {sp} | {(j or {}).get('cpu_s', '-')} / "
                     f"{(t or {}).get('cpu_s', '-')} | {(j or {}).get('peak_mib', '-')} / {(t or {}).get('peak_mib', '-')} "
                     f"| {nums(j)} | {nums(t)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "table"))
    ap.add_argument("--out", type=Path, required=True, help="folder of the runs and e2e.json")
    ap.add_argument("--data-dir", type=Path, default=None, help="raw-data folder (mnist/, bsds500/, 15SceneData/)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--mode", choices=("pair", "sequential"), default="pair")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per run in sequential mode")
    ap.add_argument("--smoke", action="store_true", help="tiny versions of every run (checks the driver)")
    ap.add_argument("--force", action="store_true", help="rerun runs already in e2e.json")
    args = ap.parse_args(argv)
    if args.command == "table":
        print(to_markdown(load_results(args.out)))
        return 0
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    bad = [w for w in only if w not in WORKLOADS]
    if bad:
        ap.error(f"--only: unknown {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
    if args.data_dir is None or not args.data_dir.is_dir():
        ap.error(f"--data-dir {args.data_dir}: not a folder (it must hold mnist/, bsds500/ and 15SceneData/)")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    if args.mode == "pair" and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        ap.error("--mode pair needs taskset and at least 2 cores; use --mode sequential")
    args.data_dir = args.data_dir.resolve()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = load_results(args.out)
    for w in only:
        run_workload(w, args, results)
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
