"""A study's report: report.md, a self-contained report.html (figures inlined) and study.json.

Everything is read from the files the runs and evaluations wrote; nothing is computed here
except statistics over seeds, so `--report-only` recomputes nothing.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from unmasked.analysis.report import inline_figure
from unmasked.study import stats
from unmasked.study.plots import band_plot, grid_plot
from unmasked.study.raw_pixels import FILE as RAW_FILE
from unmasked.study.runner import is_finished, read_json
from unmasked.study.spec import Run, Study
from unmasked.train.checkpoint import atomic_write_text
from unmasked.train.metrics import read_jsonl

# key, label, unit of a difference, digits; compared between arms when unit is not None
METRICS = [
    ("knn20_cls", "kNN20 CLS (%)", "points", 2),
    ("knn20_mean", "kNN20 mean-pool (%)", "points", 2),
    ("linear_cls", "linear CLS (%)", "points", 2),
    ("linear_mean", "linear mean-pool (%)", "points", 2),
    ("finetune", "fine-tune best (%)", "points", 2),
    ("attn_distance", "attention distance, last layers (px)", "px", 2),
    ("rankme_cls", "RankMe CLS", "", 1),
    ("rankme_mean", "RankMe mean-pool", "", 1),
    ("pretrain_min", "pretraining time (min)", None, 1),
    ("train_pflops", "training PFLOPs", None, 3),
]
LABELS = {k: label for k, label, _, _ in METRICS}


def training_flops(run_dir: Path) -> float | None:
    """From unmasked.analysis.compute when it is there (a parallel branch adds it); else unknown."""
    try:
        from unmasked.analysis.compute import training_compute
    except ImportError:
        return None
    try:
        flops = training_compute(run_dir).get("train_flops")
    except Exception:  # noqa: BLE001 - one run's missing numbers must not sink the report
        return None
    return float(flops) if isinstance(flops, (int, float)) else None


def run_values(run: Run, evals: dict | None = None) -> dict:
    """Every metric of one run that its files hold, plus the curves for the plots (kNN and linear
    results read from the files the study's evaluation options write)."""
    from unmasked.study.runner import result_file

    d = run.dir
    v: dict = {}
    evals = evals or {}
    knn, lin = read_json(d / result_file("knn", evals.get("knn", ()))), read_json(d / result_file("linear", evals.get("linear", ())))
    ft = read_json(d / "finetune.json")
    ana, summary = read_json(d / "analysis" / "analysis.json"), read_json(d / "summary.json")
    if knn:
        v["knn20_cls"], v["knn20_mean"] = knn["top1"]["cls"], knn["top1"]["mean"]
    if lin:
        v["linear_cls"], v["linear_mean"] = lin["top1"]["cls"], lin["top1"]["mean"]
    if ft:
        v["finetune"] = ft["top1"]["best"]
    if ana:
        v["attn_distance"] = ana["attention_distance"]["last_layers"]
        v["rankme_cls"], v["rankme_mean"] = ana["spectrum"]["rankme"]["cls"], ana["spectrum"]["rankme"]["mean"]
    if summary:
        v["pretrain_min"] = summary["time_s"] / 60
    flops = training_flops(d) if summary else None
    if flops is not None:
        v["train_pflops"] = flops / 1e15
    curves = {}
    if ana:
        curves["attn_per_layer"] = ana["attention_distance"]["per_layer"]
        curves["uniform"] = ana["attention_distance"]["uniform"]
    monitor = [r for r in read_jsonl(d / "metrics.jsonl") if "knn20_cls" in r] if (d / "metrics.jsonl").is_file() else []
    if monitor:
        curves["knn_epochs"] = [r["epoch"] for r in monitor]
        curves["knn_cls"] = [r["knn20_cls"] for r in monitor]
    return {"values": v, "curves": curves, "finished": is_finished(run)}


def group_label(arm: str, point: dict) -> str:
    return arm + "".join(f", {k}={v}" for k, v in point.items())


def _cell(s: dict | None, digits: int) -> str:
    if not s:
        return "—"
    vals = ", ".join(f"{x:.{digits}f}" for x in s["values"])
    if s["std"] is None:
        return f"{s['mean']:.{digits}f} ({vals})"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({vals})"


def build(study: Study) -> dict:
    per_run = {r.name: run_values(r, study.evals) for r in study.runs}
    groups = []
    for arm in study.arms:
        for point in study.points:
            runs = [r for r in study.runs if r.arm == arm and r.point == point]
            g = {"arm": arm, "point": point, "label": group_label(arm, point), "runs": [r.name for r in runs],
                 "seeds": {}, "summary": {}}
            for key, *_ in METRICS:
                by_seed = {r.seed: per_run[r.name]["values"][key] for r in runs if key in per_run[r.name]["values"]}
                g["seeds"][key] = by_seed
                g["summary"][key] = stats.summarize(list(by_seed.values())) if by_seed else None
            groups.append(g)
    diffs = []
    for b, a in study.pairs:
        for point in study.points:
            ga = next(g for g in groups if g["arm"] == a and g["point"] == point)
            gb = next(g for g in groups if g["arm"] == b and g["point"] == point)
            for key, label, unit, _ in METRICS:
                if unit is None:
                    continue
                d = stats.paired_difference({int(s): x for s, x in ga["seeds"][key].items()},
                                            {int(s): x for s, x in gb["seeds"][key].items()})
                if d is None:
                    continue
                name = label.split(" (")[0]
                where = "".join(f", {k}={v}" for k, v in point.items())
                diffs.append({"b": b, "a": a, "point": point, "metric": key, **d,
                              "sentence": stats.sentence(b, a, name + where, d, unit or "")})
    return {"per_run": per_run, "groups": groups, "differences": diffs}


def figures(study: Study, built: dict, out: Path) -> list[tuple[str, str]]:
    figs = []
    groups, per_run = built["groups"], built["per_run"]

    def curves_of(g, key):
        return [per_run[n]["curves"] for n in g["runs"] if key in per_run[n]["curves"]]

    series = []
    for g in groups:
        cs = curves_of(g, "attn_per_layer")
        if cs:
            ys = [c["attn_per_layer"] for c in cs]
            series.append({"label": g["label"], "x": list(range(1, len(ys[0]) + 1)), "ys": ys})
    if series:
        uniform = next(c["uniform"] for g in groups for c in curves_of(g, "attn_per_layer"))
        figs.append(("Attention distance per layer (band: min-max over seeds)",
                     band_plot(series, out / "attention_distance.png", "layer (block index)",
                               "mean attention distance (px)", "Mean attention distance per layer",
                               hline=(uniform, f"uniform attention ({uniform:.1f} px)")).name))
    series = []
    for g in groups:
        cs = curves_of(g, "knn_cls")
        if cs:
            n = min(len(c["knn_cls"]) for c in cs)
            series.append({"label": g["label"], "x": cs[0]["knn_epochs"][:n], "ys": [c["knn_cls"][:n] for c in cs]})
    if series:
        figs.append(("kNN monitor during pretraining (band: min-max over seeds)",
                     band_plot(series, out / "knn_monitor.png", "epoch", "kNN20 top-1, CLS (%) — monitor subset",
                               "kNN monitor (1,000 held-out queries, 5,000-image bank)").name))
    for key in study.grid:
        for metric in ("knn20_cls", "linear_cls", "attn_distance"):
            lines = {}
            for g in groups:
                s = g["summary"][metric]
                if s is None or not isinstance(g["point"][key], (int, float)):
                    continue
                rest = {k: v for k, v in g["point"].items() if k != key}
                lines.setdefault(group_label(g["arm"], rest), []).append((g["point"][key], s))
            if lines:
                name = f"grid_{key}_{metric}.png"
                figs.append((f"{LABELS[metric]} vs {key} (bars: std over seeds)",
                             grid_plot(lines, out / name, key, LABELS[metric]).name))
    return figs


def _table(study: Study, built: dict, raw: dict | None) -> list[list[str]]:
    rows = [["arm"] + [label for _, label, _, _ in METRICS]]
    for g in built["groups"]:
        rows.append([g["label"]] + [_cell(g["summary"][k], digits) for k, _, _, digits in METRICS])
    if raw and "top1" in raw:
        k20 = f"{raw['top1']['20']:.2f}"
        rows.append(["raw pixels (no training)", k20, k20] + ["—"] * (len(METRICS) - 2))
    return rows


def write_report(study: Study, command: str) -> dict:
    t0 = time.perf_counter()
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    built = build(study)
    raw = read_json(out / RAW_FILE)
    figs = figures(study, built, out)
    rows = _table(study, built, raw)
    unfinished = [r.name for r in study.runs if not built["per_run"][r.name]["finished"]]
    notes = []
    if unfinished:
        notes.append(f"{len(unfinished)} of {len(study.runs)} runs not finished: {', '.join(unfinished)}")
    if not any(g["summary"]["train_pflops"] for g in built["groups"]):
        notes.append("training FLOPs: n/a (unmasked.analysis.compute is not available)")
    if raw is None:
        notes.append("raw-pixel row: not computed yet (the study computes it after its runs)")
    md = [f"# Study {study.name}", "",
          f"Command: `{command}`. Study file: `{study.path}`. Seeds: {', '.join(map(str, study.seeds))}. "
          f"Cells: mean ± sample std over seeds (each seed's value).", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md += ["", "kNN: weighted 20-NN, T = 0.07, on the whole held-out split. Raw pixels: the same protocol on "
               "[0, 1] pixels at the encoders' input size. Attention distance: mean over the last quarter of the "
               "layers.", ""]
    if built["differences"]:
        md += ["## Paired differences between arms", "",
               "Same seeds paired; ± is the half-width of the 95% interval (Student's t over seeds). "
               "\"not distinguishable\": the interval covers 0.", ""]
        md += [f"- {d['sentence']}" for d in built["differences"]] + [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for title, name in figs:
        md += [f"## {title}", "", f"![{title}]({name})", ""]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "report.html", _html(study, command, rows, built, notes, figs, out))
    result = {
        "study": study.name, "file": str(study.path), "out": str(out), "seeds": study.seeds,
        "arms": study.arms, "grid": study.grid, "evals": study.evals,
        "runs": [{"name": r.name, "arm": r.arm, "point": r.point, "seed": r.seed, "dir": str(r.dir),
                  **built["per_run"][r.name]} for r in study.runs],
        "groups": [{k: g[k] for k in ("arm", "point", "label", "runs", "summary")} for g in built["groups"]],
        "differences": built["differences"], "raw_pixels": raw, "notes": notes,
        "files": ["report.md", "report.html", "study.json"] + [n for _, n in figs],
        "time_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out / "study.json", json.dumps(result, indent=1) + "\n")
    return result


def _html(study, command, rows, built, notes, figs, out: Path) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>study {esc(study.name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
             f"<h1>Study {esc(study.name)}</h1>",
             f"<p>Command: <code>{esc(command)}</code>. Cells: mean ± sample std over seeds (each seed's "
             "value).</p><table>",
             "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
    parts.append("</table>")
    if built["differences"]:
        parts.append("<h2>Paired differences between arms</h2><p>± is the half-width of the 95% interval "
                     "(Student's t over seeds); not distinguishable: the interval covers 0.</p><ul>")
        parts += [f"<li>{esc(d['sentence'])}</li>" for d in built["differences"]]
        parts.append("</ul>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts += [inline_figure(title, out / name) for title, name in figs]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
