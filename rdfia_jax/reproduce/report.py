"""The reproduction report: report.md and a self-contained index.html, in the order of the report's
sections, each number beside the report's and the PyTorch practical's value with a computed status."""

from __future__ import annotations

import base64
import datetime
import html
import os
import platform
from pathlib import Path

from rdfia_jax.fileio import atomic_write_bytes
from rdfia_jax.reproduce.references import REFERENCES, Reference, format_value

REPRODUCED = "reproduced"
NEEDS_WEIGHTS = "needs pretrained weights"
RANDOM = "random weights (meaningless)"
NOT_RUN = "not run at this budget"
NO_REFERENCE = "measured (no comparable reference)"
SHORTENED = "not comparable: shorter run"


def row_status(ref: Reference, measured: dict | None, *, section_ok: bool = True) -> str:
    """The status of one reference row, computed from the measured value.

    Args:
      ref: the reference.
      measured: {"value", "random_weights"} from the section's adapter, or None when not measured.
      section_ok: False when the section failed or did not run (then nothing was measured).
    Returns:
      "reproduced (...)", "differs by X", "differs (why no value)", "not comparable: shorter run (E of R epochs)", "needs pretrained weights",
      "random weights (meaningless)",
      "not run at this budget", "section failed" or "measured (no comparable reference)".
    """
    if not section_ok:
        return "section failed"
    if measured is not None and ref.needs_pretrained and measured.get("random_weights"):
        return RANDOM  # checked first: a random network's missing value is as meaningless as its value
    if measured is not None and measured.get("value") is None and measured.get("failed"):
        return f"differs ({measured['failed']})"  # run on real weights, target not reached
    if measured is None or measured.get("value") is None:
        return NEEDS_WEIGHTS if ref.needs_pretrained else NOT_RUN
    v = float(measured["value"])
    ran = measured.get("epochs")
    if ref.epochs and ran is not None and ran < ref.epochs:
        return f"{SHORTENED} ({ran} of {ref.epochs} epochs)"
    fmt = lambda x: format_value(x, "f4" if ref.fmt in ("pct", "int") and abs(x) < 1 else ref.fmt)  # noqa: E731
    if ref.check == "abs":
        d = v - float(ref.target)
        if abs(d) <= ref.tol * (1 + 1e-9):
            return f"{REPRODUCED} ({ref.describe_check()})"
        return f"differs by {'+' if d > 0 else '-'}{fmt(abs(d))}"
    if ref.check == "min":
        return f"{REPRODUCED} ({ref.describe_check()})" if v >= ref.bound else f"differs by -{fmt(ref.bound - v)}"
    if ref.check == "max":
        return f"{REPRODUCED} ({ref.describe_check()})" if v <= ref.bound else f"differs by +{fmt(v - ref.bound)}"
    if ref.check == "claim":
        return f"{REPRODUCED} ({ref.describe_check()})" if v > 0 else f"differs by {fmt(v)} (claim not reproduced)"
    return NO_REFERENCE


def environment(budget) -> dict:
    """Versions, device, date and the budget's seeds, for the report's environment table."""
    from importlib import metadata

    env = {"date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "python": platform.python_version(), "platform": platform.platform(),
           "CPU cores": str(os.cpu_count())}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        import jax

        env["device"] = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    except Exception as err:  # noqa: BLE001 -- the report is still written
        env["device"] = f"unknown ({err})"
    env["budget"] = f"{budget.name}: {budget.description}"
    env["seeds"] = (f"GAN seed 0; DANN seeds {', '.join(map(str, budget.s3.seeds))}; small classifiers seeds 0 "
                    "(model) and 1 (judge); random weights seed 0")
    return env


def _section_rows(section: str, rec: dict | None) -> list[dict]:
    """The reference rows of one section with their measured values and statuses."""
    state = (rec or {}).get("status")
    measured = ((rec or {}).get("result") or {}).get("measured", {}) if state == "ok" else {}
    rows = []
    for ref in REFERENCES:
        if ref.section != section:
            continue
        m = measured.get(ref.key)
        status = row_status(ref, m, section_ok=state != "failed")
        rows.append({"ref": ref, "measured": None if m is None else m.get("value"),
                     "note": "" if m is None else m.get("note", ""), "status": status})
    return rows


def summary_rows(records: dict) -> list[dict]:
    """One row per section: status, wall time and counts of row statuses."""
    from rdfia_jax.reproduce.runner import SECTIONS

    out = []
    for s, title in SECTIONS.items():
        rec = records.get(s)
        rows = _section_rows(str(s), rec)
        counts = {"reproduced": sum(r["status"].startswith(REPRODUCED) for r in rows),
                  "differs": sum(r["status"].startswith("differs") for r in rows),
                  "other": sum(not r["status"].startswith((REPRODUCED, "differs")) for r in rows)}
        status = rec.get("status", "pending") if rec else "pending"
        load = (rec or {}).get("load_avg")
        out.append({"section": s, "title": title, "status": status,
                    "wall_s": rec.get("wall_s", 0.0) if rec else 0.0, **counts,
                    "load": " / ".join(f"{v:.1f}" for v in load) if load else "—",
                    "invocations": int((rec or {}).get("invocations") or 1),
                    "error": (rec or {}).get("error") or ""})
    return out


def _md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_REF_COLUMNS = ("quantity", "data", "report", "PyTorch practical", "measured", "check", "status", "source")


def _ref_cells(row: dict) -> list[str]:
    """One reference row's cells as both tables print them, in :data:`_REF_COLUMNS` order."""
    ref = row["ref"]
    meas = format_value(row["measured"], ref.fmt) + (f" ({row['note']})" if row["note"] else "")
    return [ref.label, ref.data, format_value(ref.report, ref.fmt), format_value(ref.lab, ref.fmt), meas,
            ref.describe_check(), row["status"], ref.source]


def _extra_value(value) -> str:
    """A measurement without reference value, as both tables print it."""
    return str(value) if isinstance(value, str) or value is None else f"{value:.4g}"


def build_markdown(budget, records: dict, env: dict) -> str:
    from rdfia_jax.reproduce.runner import SECTIONS

    L = [f"# The RDFIA practical, reproduced (budget `{budget.name}`)", "",
         f"{budget.description}. Each number stands beside the student report's value (spec/report.txt) and "
         "the PyTorch practical's (spec/LAB.md); the status is computed from the measured value.", "",
         "## Summary", "", "| section | status | time (s) | reproduced | differs | other rows |",
         "| --- | --- | --- | --- | --- | --- |"]
    for r in summary_rows(records):
        st = r["status"] + (f": {r['error']}" if r["error"] else "")
        L.append(f"| {r['section']} {r['title']} | {_md_escape(st)} | {r['wall_s']:.1f} | {r['reproduced']} | "
                 f"{r['differs']} | {r['other']} |")
    for s, title in SECTIONS.items():
        rec = records.get(s) or {}
        L += ["", f"## {s} {title}", ""]
        st = rec.get("status", "pending (not run yet)")
        L.append(f"Status: **{st}**" + (f" ({rec.get('wall_s', 0):.1f} s)" if rec.get("wall_s") else ""))
        if rec.get("error"):
            L += ["", f"Error: `{_md_escape(rec['error'])}`"]
        result = rec.get("result") or {}
        for note in result.get("notes", []):
            L += ["", f"- {_md_escape(note)}"]
        L += ["", "| " + " | ".join(_REF_COLUMNS) + " |", "| " + " | ".join(["---"] * len(_REF_COLUMNS)) + " |"]
        for row in _section_rows(str(s), rec if rec else None):
            L.append("| " + " | ".join(map(_md_escape, _ref_cells(row))) + " |")
        if result.get("extra"):
            L += ["", "Other measurements (no reference value):", "", "| quantity | value | note |",
                  "| --- | --- | --- |"]
            for x in result["extra"]:
                L.append(f"| {_md_escape(x['label'])} | {_md_escape(_extra_value(x['value']))} | "
                         f"{_md_escape(x.get('note', ''))} |")
        for f in result.get("figures", []):
            path = f"section{s}/{f['path']}"
            L += ["", f"**{f['report']}**: {f['caption']}", ""]
            L.append(f"[{f['path']}]({path})" if f["kind"] == "text" else f"![{_md_escape(f['caption'])}]({path})")
    L += ["", "## Environment", "", "| | |", "| --- | --- |"]
    L += [f"| {k} | {_md_escape(v)} |" for k, v in env.items()]
    L += ["", "## Time per section", "", "Wall time over every invocation that worked on the section (more than one: "
          "continued with `--resume` after a kill).", "",
          "| section | status | wall time (s) | invocations | load average at its end (1/5/15 min) |",
          "| --- | --- | --- | --- | --- |"]
    for r in summary_rows(records):
        L.append(f"| {r['section']} | {r['status']} | {r['wall_s']:.1f} | {r['invocations']} | {r['load']} |")
    return "\n".join(L) + "\n"


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #bbb;padding:3px 6px;
vertical-align:top}th{background:#eee}img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;
padding:.5em;overflow:auto;font-size:.8em}.ok{color:#060}.bad{color:#a00}.other{color:#666}figure{margin:1em 0}"""


def _cls(status: str) -> str:
    return "ok" if status.startswith((REPRODUCED, "ok")) else "bad" if status.startswith(("differs", "failed",
                                                                                        "section failed")) else "other"


def build_html(out: Path, budget, records: dict, env: dict) -> str:
    from rdfia_jax.reproduce.runner import SECTIONS

    e = html.escape
    H = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
         f"<title>RDFIA practical reproduced ({e(budget.name)})</title><style>{_CSS}</style></head><body>",
         f"<h1>The RDFIA practical, reproduced (budget <code>{e(budget.name)}</code>)</h1>",
         f"<p>{e(budget.description)}. Each number stands beside the student report's value and the PyTorch "
         "practical's; the status is computed from the measured value.</p>", "<h2>Summary</h2>",
         "<table><tr><th>section</th><th>status</th><th>time (s)</th><th>reproduced</th><th>differs</th>"
         "<th>other rows</th></tr>"]
    for r in summary_rows(records):
        st = r["status"] + (f": {r['error']}" if r["error"] else "")
        H.append(f"<tr><td>{r['section']} {e(r['title'])}</td><td class='{_cls(r['status'])}'>{e(st)}</td>"
                 f"<td>{r['wall_s']:.1f}</td><td>{r['reproduced']}</td><td>{r['differs']}</td><td>{r['other']}</td></tr>")
    H.append("</table>")
    for s, title in SECTIONS.items():
        rec = records.get(s) or {}
        result = rec.get("result") or {}
        st = rec.get("status", "pending (not run yet)")
        H.append(f"<h2 id='section{s}'>{s} {e(title)}</h2><p>Status: <b class='{_cls(st)}'>{e(st)}</b>"
                 + (f" ({rec.get('wall_s', 0):.1f} s)" if rec.get("wall_s") else "") + "</p>")
        if rec.get("error"):
            H.append(f"<p class='bad'>Error: <code>{e(rec['error'])}</code></p>")
        if result.get("notes"):
            H.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in result["notes"]) + "</ul>")
        H.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in _REF_COLUMNS) + "</tr>")
        status_col = _REF_COLUMNS.index("status")
        for row in _section_rows(str(s), rec if rec else None):
            tds = [f"<td>{e(c)}</td>" for c in _ref_cells(row)]
            tds[status_col] = f"<td class='{_cls(row['status'])}'>{e(row['status'])}</td>"
            H.append("<tr>" + "".join(tds) + "</tr>")
        H.append("</table>")
        if result.get("extra"):
            H.append("<p>Other measurements (no reference value):</p><table><tr><th>quantity</th><th>value</th>"
                     "<th>note</th></tr>")
            for x in result["extra"]:
                H.append(f"<tr><td>{e(x['label'])}</td><td>{e(_extra_value(x['value']))}</td>"
                         f"<td>{e(x.get('note', ''))}</td></tr>")
            H.append("</table>")
        for f in result.get("figures", []):
            path = out / f"section{s}" / f["path"]
            cap = f"<figcaption><b>{e(f['report'])}</b>: {e(f['caption'])}</figcaption>"
            if not path.is_file():
                H.append(f"<p class='bad'>{e(f['report'])}: missing file section{s}/{e(f['path'])}</p>")
            elif f["kind"] == "text":
                H.append(f"<figure>{cap}<pre>{e(path.read_text())}</pre></figure>")
            else:
                data = base64.b64encode(path.read_bytes()).decode()
                H.append(f"<figure>{cap}<img alt='{e(f['caption'])}' src='data:image/png;base64,{data}'></figure>")
    H.append("<h2>Environment</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"
                                                     for k, v in env.items()) + "</table>")
    H.append("<h2>Time per section</h2><p>Wall time over every invocation that worked on the section (more than "
             "one: continued with <code>--resume</code> after a kill).</p><table><tr><th>section</th><th>status</th>"
             "<th>wall time (s)</th><th>invocations</th><th>load average at its end (1/5/15 min)</th></tr>"
             + "".join(f"<tr><td>{r['section']}</td><td>{e(r['status'])}</td><td>{r['wall_s']:.1f}</td>"
                       f"<td>{r['invocations']}</td><td>{r['load']}</td></tr>"
                       for r in summary_rows(records)) + "</table></body></html>")
    return "\n".join(H) + "\n"


def write_report(out, budget, records: dict) -> tuple[Path, Path]:
    """Write OUT/report.md and OUT/index.html (atomically) from the section records."""
    out = Path(out)
    env = environment(budget)
    md, page = out / "report.md", out / "index.html"
    atomic_write_bytes(md, build_markdown(budget, records, env).encode())
    atomic_write_bytes(page, build_html(out, budget, records, env).encode())
    return md, page
