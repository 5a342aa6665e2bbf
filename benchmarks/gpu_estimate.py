"""Expected time of a `rdfia-jax reproduce` run on a GPU, from a run measured on this CPU.

No GPU has been lent to this project, so the time the ``full`` budget would take on one is an
estimate, not a measurement. This script makes the estimate reproducible and says what it rests on:

1. **What the run did**, read from its folder (``--run-dir``, a ``reproduce`` output): for each
   section its measured wall time on this CPU, and for each hot program how often it ran and how long
   that took here (feature passes in ``section1/transfer/details.json``, DANN runs' ``result.json``, GAN
   runs' ``summary.json``).
2. **What each hot program costs**: its FLOPs and bytes from XLA's cost analysis of the jitted
   program (the same functions the CLI runs, lowered for the shapes the run used).
3. **A roofline for one H200 SXM** (the lent machine's GPU): TF32 tensor-core rate (JAX's default
   precision for float32 matrix products and convolutions on that GPU) and HBM bandwidth, each at a
   stated efficiency, plus a fixed cost per call (dispatch, host-to-device copy of the batch). Three
   settings, ``optimistic`` / ``expected`` / ``pessimistic``, bracket the answer.
4. **Everything else stays at its CPU time**: data decoding, MNIST-M construction, SVM fits, t-SNE,
   scoring and figures are host work that a GPU does not speed up (the GPU machine's 16 cores may
   well make them faster, so this part is an upper bound).

A section's expected GPU time = (its CPU wall time - the CPU time of its hot programs) + the hot
programs' modeled GPU time. Measure instead of estimating with ``benchmarks/gpu_suite.sh`` and
``rdfia-jax reproduce --budget full`` on a lent GPU.

Usage::

    python benchmarks/gpu_estimate.py --run-dir runs/full [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

# One H200 SXM (NVIDIA's datasheet, dense rates): what the device tool lends. Its tensor cores are
# the H100's; its HBM3e is faster (4.8 against 3.35 TB/s).
PEAK_TF32_FLOPS = 494.7e12
PEAK_HBM_BYTES = 4.8e12


@dataclasses.dataclass(frozen=True)
class GpuModel:
    """Fractions of the peaks a program reaches, and a fixed cost per call (seconds)."""

    name: str
    flops_eff: float
    bytes_eff: float
    call_s: float

    def seconds(self, flops: float, bytes_accessed: float) -> float:
        """Roofline time of one call: the slower of compute and memory traffic, plus the fixed cost."""
        return max(flops / (self.flops_eff * PEAK_TF32_FLOPS), bytes_accessed / (self.bytes_eff * PEAK_HBM_BYTES)) \
            + self.call_s


MODELS = (GpuModel("optimistic", 0.5, 0.8, 100e-6),
          GpuModel("expected", 0.25, 0.5, 300e-6),
          GpuModel("pessimistic", 0.1, 0.3, 1e-3))


# ------------------------------------------------------------------------------------ program costs

def _cost(lowered) -> tuple[float, float]:
    """(FLOPs, bytes accessed) of a lowered program, from XLA's analysis of the compiled module."""
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per device
        cost = cost[0]
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def dann_step_cost(src_batch: int, tgt_batch: int, labelled: str) -> tuple[float, float]:
    """One DANN training step (the dann command's step; GRL settings do not change its cost)."""
    import jax
    import numpy as np

    from rdfia_jax.dann import steps

    cfg = steps.StepConfig(labelled=labelled, total_steps=1000)
    graphdef, state = steps.init_state(0, cfg)
    step = steps.make_train_step(graphdef, cfg)
    batch = {"src_x": jax.ShapeDtypeStruct((src_batch, 28, 28, 1), np.uint8),
             "src_y": jax.ShapeDtypeStruct((src_batch,), np.int32),
             "tgt_x": jax.ShapeDtypeStruct((tgt_batch, 28, 28, 3), np.uint8)}
    if labelled == "target":
        batch["tgt_y"] = jax.ShapeDtypeStruct((tgt_batch,), np.int32)
    return _cost(step.lower(state, batch, jax.ShapeDtypeStruct((), np.int32)))


def gan_step_cost(kind: str, batch_size: int, **changes) -> tuple[float, float]:
    """One GAN training step (D then G) of ``rdfia-jax gan`` / ``cgan``."""
    import jax
    import numpy as np

    from rdfia_jax import xla
    from rdfia_jax.gan import steps

    parts, state = steps.build(steps.GanConfig(kind=kind, batch_size=batch_size, **changes))
    step = xla.jit(steps.make_train_step(parts))
    batch = {"x": jax.ShapeDtypeStruct((batch_size, 32, 32, 1), np.uint8)}
    if kind == "cgan":
        batch["y"] = jax.ShapeDtypeStruct((batch_size,), np.int32)
    return _cost(step.lower(state, batch, jax.ShapeDtypeStruct((), np.int32)))


def features_cost(model: str, batch_size: int, layers: tuple[str, ...]) -> tuple[float, float]:
    """One batch of ``rdfia-jax transfer``'s feature extraction (forward pass up to ``layers``)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rdfia_jax import models

    graphdef, state = nnx.split(models.abstract(model))
    size = 227 if model == "alexnet" else 224
    fwd = jax.jit(models.forward, static_argnums=(0, 3))
    return _cost(fwd.lower(graphdef, state, jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32), layers))


# ------------------------------------------------------------------------------------ the measured run

def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def section_walls(run_dir: Path) -> dict[int, float]:
    """Measured wall time of each finished section (s)."""
    out = {}
    for s in (1, 2, 3, 4):
        path = run_dir / f"section{s}" / "section.json"
        if path.is_file():
            rec = _read_json(path)
            if rec.get("status") == "ok":
                out[s] = float(rec["wall_s"])
    return out


def hot_work(run_dir: Path) -> list[dict]:
    """The hot programs each section ran: {"section", "what", "program", "calls", "cpu_s"}.

    ``program`` keys :func:`program_costs`; ``calls`` is the number of times it ran; ``cpu_s`` the time
    this CPU took for them (feature passes: the pass's time; training runs: the training loop's time).
    """
    work = []
    details = run_dir / "section1" / "transfer" / "details.json"
    if details.is_file():
        for key, p in sorted(_read_json(details).get("passes", {}).items()):  # e.g. "vgg16/crop"
            model = key.split("/")[0]
            work.append({"section": 1, "what": f"{key} features ({'+'.join(p['computed'])}), {p['images']} images",
                         "program": f"{model}_features", "calls": -(-int(p["images"]) // 32),
                         "cpu_s": float(p["seconds"])})
    for path in sorted((run_dir / "section3").glob("*/seed*/result.json")):
        r = _read_json(path)
        if r.get("smoke"):
            continue
        program = {128: "dann_step_source_only", 64: "dann_step"}.get(r["src_batch"], "dann_step")
        if r["run"] == "target-only":
            program = "dann_step_target_only"
        work.append({"section": 3, "what": f"DANN {r['run']} seed {r['seed']}, {r['steps']} steps", "program": program,
                     "calls": int(r["steps_run"]), "cpu_s": float(r["wall_s"])})
    for path in sorted((run_dir / "section4").glob("**/summary.json")):
        s = _read_json(path)
        cfg = s["config"]
        if cfg["kind"] == "cgan":
            program = "cgan_step"
        else:
            program = "dcgan_step" + ("_ngf%d" % cfg["ngf"] if cfg["ngf"] != 32 else "") + \
                ("_nz%d" % cfg["nz"] if cfg["nz"] != 100 else "")
        work.append({"section": 4, "what": f"{s['name']}, {s['steps']} steps", "program": program,
                     "calls": int(s["steps"]) - int(s.get("resumed_from") or 0), "cpu_s": float(s["train_s"])})
    return work


def program_costs(names: set[str]) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes) of each named program (only those the run used are compiled)."""
    builders = {
        "vgg16_features": lambda: features_cost("vgg16", 32, ("relu7", "relu6")),
        "alexnet_features": lambda: features_cost("alexnet", 32, ("relu7", "fc7")),
        "dann_step": lambda: dann_step_cost(64, 64, "source"),
        "dann_step_source_only": lambda: dann_step_cost(128, 64, "source"),
        "dann_step_target_only": lambda: dann_step_cost(64, 128, "target"),
        "cgan_step": lambda: gan_step_cost("cgan", 128),
    }
    out = {}
    for name in sorted(names):
        if name in builders:
            out[name] = builders[name]()
        elif name.startswith("dcgan_step"):
            changes = {}
            for part in name.split("_")[2:]:
                for key in ("ngf", "nz"):
                    if part.startswith(key):
                        changes[key] = int(part[len(key):])
            out[name] = gan_step_cost("gan", 128, **changes)
        else:
            raise KeyError(f"no cost builder for program {name!r}")
    return out


def estimate(walls: dict[int, float], work: list[dict], costs: dict[str, tuple[float, float]]) -> dict:
    """Per section and in total: CPU time, host remainder, and the GPU time under each of :data:`MODELS`."""
    sections = {}
    for s, wall in sorted(walls.items()):
        items = [w for w in work if w["section"] == s]
        hot_cpu = sum(w["cpu_s"] for w in items)
        host = max(0.0, wall - hot_cpu)
        gpu = {m.name: host + sum(w["calls"] * m.seconds(*costs[w["program"]]) for w in items) for m in MODELS}
        sections[s] = {"cpu_s": wall, "hot_cpu_s": hot_cpu, "host_s": host, "gpu_s": gpu,
                       "hot": [{**w, **{f"gpu_s_{m.name}": w["calls"] * m.seconds(*costs[w["program"]])
                                        for m in MODELS}} for w in items]}
    total = {"cpu_s": sum(v["cpu_s"] for v in sections.values()),
             "gpu_s": {m.name: sum(v["gpu_s"][m.name] for v in sections.values()) for m in MODELS}}
    return {"sections": sections, "total": total,
            "models": [dataclasses.asdict(m) for m in MODELS],
            "programs": {k: {"flops": f, "bytes": b} for k, (f, b) in costs.items()}}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(result: dict) -> str:
    names = [m["name"] for m in result["models"]]
    lines = ["| program | GFLOP per call | MB per call | " + " | ".join(f"{n} ms per call" for n in names) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for prog, c in sorted(result["programs"].items()):
        per = [GpuModel(**m).seconds(c["flops"], c["bytes"]) * 1e3 for m in result["models"]]
        lines.append(f"| {prog} | {c['flops'] / 1e9:.2f} | {c['bytes'] / 1e6:.1f} | "
                     + " | ".join(f"{v:.2f}" for v in per) + " |")
    lines += ["", "| section | this CPU | of which hot programs | host work (kept) | "
              + " | ".join(f"GPU, {n}" for n in names) + " |",
              "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for s, v in result["sections"].items():
        lines.append(f"| {s} | {_minutes(v['cpu_s'])} | {_minutes(v['hot_cpu_s'])} | {_minutes(v['host_s'])} | "
                     + " | ".join(_minutes(v["gpu_s"][n]) for n in names) + " |")
    t = result["total"]
    lines.append(f"| all | {_minutes(t['cpu_s'])} | | | " + " | ".join(_minutes(t["gpu_s"][n]) for n in names) + " |")
    unmodeled = [str(s) for s, v in result["sections"].items() if not v["hot"]]
    if unmodeled:
        lines += ["", f"Section(s) {', '.join(unmodeled)}: no hot program modeled, kept at the CPU time."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path, help="a `rdfia-jax reproduce` output folder")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if not (args.run_dir / "reproduce.json").is_file():
        print(f"error: {args.run_dir} is not a `rdfia-jax reproduce` folder (no reproduce.json)", file=sys.stderr)
        return 2
    walls = section_walls(args.run_dir)
    if not walls:
        print(f"error: {args.run_dir} has no finished section", file=sys.stderr)
        return 2
    work = hot_work(args.run_dir)
    costs = program_costs({w["program"] for w in work if w["section"] in walls})
    result = estimate(walls, [w for w in work if w["section"] in walls], costs)
    print(markdown(result))
    if args.json:
        from rdfia_jax.fileio import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
