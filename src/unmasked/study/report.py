"""A study's report: report.md, a self-contained report.html (figures inlined) and study.json.

Everything is read from the files the runs and evaluations wrote; nothing is computed here
except statistics over seeds, so `--report-only` recomputes nothing. The report is a list of
blocks (unmasked.document), rendered to both Markdown and HTML.

What the statistics cover: seed variation only. The test set and the probe's seed are fixed, so
an interval says how much the number moves when pretraining is repeated with another seed, not
how it would move on other test images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from unmasked import document as doc
from unmasked.analysis.compute import training_compute
from unmasked.analysis.differences import config_differences
from unmasked.files import atomic_write_texts, read_json_or_none
from unmasked.provenance import one_line
from unmasked.study import stats
from unmasked.study.plots import band_plot, grid_plot
from unmasked.study.raw_pixels import FILE as RAW_FILE
from unmasked.study.raw_pixels import is_current as raw_is_current
from unmasked.study.runner import RESULT_FILES, is_finished, result_file, run_result_file
from unmasked.study.spec import Run, Study
from unmasked.train.metrics import read_jsonl

# key, label, unit of a difference, digits; compared between arms when unit is not None
METRICS = [
    ("knn20_cls", "kNN20 CLS (%)", "points", 2),
    ("knn20_mean", "kNN20 mean-pool (%)", "points", 2),
    ("linear_cls", "linear CLS (%)", "points", 2),
    ("linear_mean", "linear mean-pool (%)", "points", 2),
    ("finetune", "fine-tune, last epoch (%)", "points", 2),
    ("attn_distance", "attention distance, last layers (px)", "px", 2),
    ("rankme_cls", "RankMe CLS", "", 1),
    ("rankme_mean", "RankMe mean-pool", "", 1),
    ("pretrain_min", "pretraining time (min)", None, 1),
    ("train_pflops", "training PFLOPs", None, 3),
]
LABELS = {k: label for k, label, _, _ in METRICS}
SEED_ONLY = ("The intervals and standard deviations cover seed variation only: every run is evaluated on "
             "the same fixed test set with a fixed probe seed, so they say how much a number moves when "
             "pretraining is repeated with another seed, not how it would move on other test images.")


def training_flops(run_dir: Path) -> float | None:
    """Training FLOPs as `compare` counts them; None when the run's step cannot be rebuilt."""
    try:
        flops = training_compute(run_dir).get("train_flops")
    except Exception:  # noqa: BLE001 - one run's missing numbers must not sink the report
        return None
    return float(flops) if isinstance(flops, (int, float)) else None


def run_values(run: Run, evals: dict | None = None) -> dict:
    """Every metric of one run that its files hold, plus the curves for the plots (kNN and linear
    results read from the files the study's evaluation options write)."""
    d = run.dir
    v: dict = {}
    evals = evals or {}
    files = {p: run_result_file(run, p, evals.get(p, ())) for p in ("knn", "linear")}
    knn, lin = read_json_or_none(d / files["knn"]), read_json_or_none(d / files["linear"])
    ft = read_json_or_none(d / "finetune.json")
    ana, summary = read_json_or_none(d / "analysis" / "analysis.json"), read_json_or_none(d / "summary.json")
    pixels = {}
    if knn:
        v["knn20_cls"], v["knn20_mean"] = knn["top1"]["cls"], knn["top1"]["mean"]
        if "pixels" in knn:
            pixels["knn"] = knn["pixels"]["top1"]
            pixels["view"] = knn.get("transform", {}).get("description")
    if lin:
        v["linear_cls"], v["linear_mean"] = lin["top1"]["cls"], lin["top1"]["mean"]
        if "pixels" in lin:
            pixels["linear"] = lin["pixels"]["top1"]
            pixels.setdefault("view", lin.get("transform", {}).get("description"))
    if ft:  # the last epoch: the best one is chosen on the test split and never enters a study table
        v["finetune"] = ft["top1"]["last"]
    layers = None
    if ana:
        ad = ana["attention_distance"]
        v["attn_distance"] = ad["last_layers"]
        v["rankme_cls"], v["rankme_mean"] = ana["spectrum"]["rankme"]["cls"], ana["spectrum"]["rankme"]["mean"]
        if "last_layers_count" in ad and "per_layer" in ad:
            layers = (len(ad["per_layer"]) - ad["last_layers_count"] + 1, len(ad["per_layer"]))
    if summary:
        v["pretrain_min"] = summary["time_s"] / 60
    flops = training_flops(d) if summary else None
    if flops is not None:
        v["train_pflops"] = flops / 1e15
    curves = {}
    if ana:
        curves["attn_per_layer"] = ana["attention_distance"]["per_layer"]
        curves["uniform"] = ana["attention_distance"]["uniform"]
    metrics = d / "metrics.jsonl"
    monitor = [r for r in read_jsonl(metrics) if "knn20_cls" in r] if metrics.is_file() else []
    if monitor:
        curves["knn_epochs"] = [r["epoch"] for r in monitor]
        curves["knn_cls"] = [r["knn20_cls"] for r in monitor]
        if "knn20_pixels" in monitor[-1]:  # the same kNN on the subset's raw pixels (runs since it was logged)
            curves["knn_pixels"] = monitor[-1]["knn20_pixels"]
    return {"values": v, "curves": curves, "finished": is_finished(run), "pixels": pixels,
            "files": files, "attn_layers": layers}


def group_label(arm: str, point: dict) -> str:
    return arm + "".join(f", {k}={v}" for k, v in point.items())


def mean_sd(s: dict | None, digits: int) -> str:
    """A summary as "mean ± sd sd" (the mean alone for one seed; "—" for none)."""
    if not s:
        return "—"
    if s["std"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} sd"


def _cell(s: dict | None, digits: int) -> str:
    """`mean_sd`, then each seed's value."""
    if not s:
        return "—"
    return f"{mean_sd(s, digits)} ({', '.join(f'{x:.{digits}f}' for x in s['values'])})"


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
            for key, _label, unit, _ in METRICS:
                if unit is None:
                    continue
                d = stats.paired_difference({int(s): x for s, x in ga["seeds"][key].items()},
                                            {int(s): x for s, x in gb["seeds"][key].items()})
                if d is not None:
                    diffs.append({"b": b, "a": a, "point": point, "metric": key, "unit": unit, **d})
    family = stats.correct_family(diffs)
    for d in diffs:
        name = LABELS[d["metric"]].split(" (")[0]
        where = "".join(f", {k}={v}" for k, v in d["point"].items())
        d["sentence"] = stats.sentence(d["b"], d["a"], name + where, d, d.pop("unit"))
    changed = [d for d in diffs if d.get("verdict_unadjusted", d["verdict"]) != d["verdict"]]
    return {"per_run": per_run, "groups": groups, "differences": diffs, "family": family,
            "changed_by_holm": len(changed), "attention_per_layer": attention_per_layer(groups, per_run)}


def attention_per_layer(groups: list[dict], per_run: dict) -> dict | None:
    """Mean attention distance per layer, per arm (mean and sd over its seeds, layer by layer), and
    uniform attention's distance on the same grid: what a locality study reads. None without analyses."""
    rows, uniform = [], None
    for g in groups:
        curves = [per_run[n]["curves"] for n in g["runs"] if "attn_per_layer" in per_run[n]["curves"]]
        depths = {len(c["attn_per_layer"]) for c in curves}
        if len(depths) != 1:  # none analysed yet, or arms of different depths: no layer-by-layer row
            continue
        uniform = curves[0]["uniform"] if uniform is None else uniform
        layers = [stats.summarize([c["attn_per_layer"][i] for c in curves]) for i in range(depths.pop())]
        rows.append({"label": g["label"], "seeds": len(curves), "layers": layers})
    return {"uniform": uniform, "groups": rows} if rows else None


def attention_table(per_layer: dict) -> list[list[str]]:
    """The per-layer table of a report and of a page's `results:layers` block."""
    depth = max(len(r["layers"]) for r in per_layer["groups"])
    rows = [["arm"] + [f"layer {i}" for i in range(1, depth + 1)]]
    for r in per_layer["groups"]:
        cells = [mean_sd(s, 2) for s in r["layers"]]
        rows.append([r["label"]] + cells + ["—"] * (depth - len(cells)))
    rows.append(["uniform attention (same grid)"] + [f"{per_layer['uniform']:.2f}"] * depth)
    return rows


def figures(study: Study, built: dict, out: Path) -> list[doc.Figure]:
    figs = []
    groups, per_run = built["groups"], built["per_run"]

    def curves_of(g, key):
        return [per_run[n]["curves"] for n in g["runs"] if key in per_run[n]["curves"]]

    per_layer = built["attention_per_layer"]
    if per_layer:
        uniform = per_layer["uniform"]
        series = [{"label": r["label"], "x": list(range(1, len(r["layers"]) + 1)),
                   "ys": [list(seed) for seed in zip(*(layer["values"] for layer in r["layers"]))]}
                  for r in per_layer["groups"]]
        figs.append(doc.Figure("Attention distance per layer (band: min-max over seeds)",
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
        # one line only where every run's monitor saw the same pixels (arms may differ in data or size)
        pxs = {round(c["knn_pixels"], 4) for g in groups for c in curves_of(g, "knn_pixels")}
        px = pxs.pop() if len(pxs) == 1 else None
        figs.append(doc.Figure("kNN monitor during pretraining (band: min-max over seeds)",
                               band_plot(series, out / "knn_monitor.png", "epoch",
                                         "kNN20 top-1, CLS (%) — monitor subset",
                                         "kNN monitor (1,000 held-out queries, 5,000-image bank)",
                                         hline=None if px is None else
                                         (px, f"raw pixels, same subset ({px:.1f}%)")).name))
    # the pixels' line on a grid's kNN and linear figures, where every run was measured on the same pixels
    pixel_lines = {}
    for metric, proto in (("knn20_cls", "knn"), ("knn20_mean", "knn"), ("linear_cls", "linear")):
        values = {round(r["pixels"][proto], 4) for r in per_run.values()
                  if r["pixels"] and r["pixels"].get(proto) is not None}
        if len(values) == 1:
            pixel_lines[metric] = values.pop()
    for key in study.grid:
        # mean-pooled too: it is the stronger kNN feature for MAE, so the budget curves need both
        for metric in ("knn20_cls", "knn20_mean", "linear_cls", "attn_distance"):
            lines = {}
            for g in groups:
                s = g["summary"][metric]
                if s is None or not isinstance(g["point"][key], (int, float)):
                    continue
                rest = {k: v for k, v in g["point"].items() if k != key}
                lines.setdefault(group_label(g["arm"], rest), []).append((g["point"][key], s))
            if lines:
                name = f"grid_{key}_{metric}.png"
                figs.append(doc.Figure(f"{LABELS[metric]} vs {key} (bars: sample std over seeds)",
                                       grid_plot(lines, out / name, key, LABELS[metric],
                                                 hline=None if metric not in pixel_lines else
                                                 (pixel_lines[metric], f"raw pixels ({pixel_lines[metric]:.2f}%)")
                                                 ).name))
    return figs


def protocol_labels(study: Study, built: dict) -> dict[str, str]:
    """Column labels, with the result file named where the study's evaluation options are not the
    default protocol (other k, T, probe recipe, input size or data), and the layers that the
    attention distance averages."""
    labels = dict(LABELS)
    for proto, keys in (("knn", ("knn20_cls", "knn20_mean")), ("linear", ("linear_cls", "linear_mean"))):
        if proto in study.evals and result_file(proto, study.evals[proto]) != RESULT_FILES[proto]:
            name = result_file(proto, study.evals[proto])
            for k in keys:
                labels[k] = f"{LABELS[k][:-4]} [{name[:-5]}] (%)"
    layers = {r["attn_layers"] for r in built["per_run"].values() if r["attn_layers"]}
    if len(layers) == 1:
        lo, depth = layers.pop()
        which = f"layer {lo}" if lo == depth else f"layers {lo}-{depth}"
        labels["attn_distance"] = f"attention distance, {which} of {depth} (px)"
    else:
        labels["attn_distance"] = "attention distance, last quarter of the layers (px)"
    return labels


def pixel_reference(study: Study, built: dict, raw: dict | None, notes: list[str]) -> dict | None:
    """The raw-pixel numbers, from the runs' own result files (the evaluation's pixel row)."""
    found = [r["pixels"] for r in built["per_run"].values() if r["pixels"]]
    if found:  # each entry from the first run that has it (a run may lack one evaluation so far)
        merged, differ = {}, False
        for key in ("knn", "linear", "view"):
            values = [p[key] for p in found if p.get(key) is not None]
            if values:
                merged[key] = values[0]
                differ |= len({json.dumps(v, sort_keys=True) for v in values}) > 1
        if differ:
            notes.append("raw pixels: the runs' result files hold different pixel rows (different data or "
                         "evaluation view); the first is shown")
        return merged
    if raw_is_current(raw) and "top1" in raw:
        return {"knn": raw["top1"]["20"], "view": raw["view"]["description"]}
    if raw is not None:
        notes.append(f"raw pixels: {RAW_FILE} predates the evaluation view (it used a training crop); not shown")
    return None


def _table(study: Study, built: dict, pixels: dict | None, labels: dict) -> list[list[str]]:
    rows = [["arm"] + [labels[k] for k, *_ in METRICS]]
    for g in built["groups"]:
        rows.append([g["label"]] + [_cell(g["summary"][k], digits) for k, _, _, digits in METRICS])
    if pixels:
        knn = f"{pixels['knn']:.2f}" if "knn" in pixels else "—"
        lin = f"{pixels['linear']:.2f}" if "linear" in pixels else "—"
        rows.append(["raw pixels (no training)", knn, knn, lin, lin] + ["—"] * (len(METRICS) - 4))
    return rows


def _arm_configs(study: Study) -> tuple[list[str], list[dict]]:
    """One config.json per arm and grid point, all at the same seed (so the seed drops out)."""
    labels, configs = [], []
    for arm in study.arms:
        for point in study.points:
            run = next((r for r in study.runs if r.arm == arm and r.point == point and r.seed == study.seeds[0]), None)
            cfg = read_json_or_none(run.dir / "config.json") if run else None
            if cfg:
                labels.append(group_label(arm, point))
                configs.append(cfg)
    return labels, configs


def differences_blocks(study: Study, built: dict) -> list:
    """As `compare`: a warning and a table when arms differ in more than the objective, with each
    arm's training compute beside it."""
    labels, configs = _arm_configs(study)
    try:
        diffs = config_differences(configs) if len(configs) > 1 else []
    except Exception:  # noqa: BLE001 - an unreadable config must not sink the report
        diffs = []
    if not diffs:
        return []
    compute = {g["label"]: g["summary"] for g in built["groups"]}

    def mean_of(label, key, digits):
        s = compute.get(label, {}).get(key)
        return f"{s['mean']:.{digits}f}" if s else "—"

    rows = [["setting"] + labels]
    rows += [[name] + ["—" if v is None else str(v) for v in values] for name, values in diffs]
    rows.append(["training PFLOPs (mean over seeds)"] + [mean_of(lab, "train_pflops", 3) for lab in labels])
    rows.append(["pretraining time, min (mean over seeds)"] + [mean_of(lab, "pretrain_min", 1) for lab in labels])
    return [doc.Heading("What differs besides the objective"),
            doc.Paragraph(f"**Warning:** these arms differ in more than the objective "
                          f"({', '.join(d for d, _ in diffs)}); a gap between them is not the objective's alone. "
                          "Each arm's training compute is in the last rows."),
            doc.Table(rows)]


def holm_changes(built: dict) -> str:
    """One sentence: how many verdicts Holm's correction changes against the unadjusted 95% intervals."""
    n, family = built["changed_by_holm"], built["family"]
    if not family:
        return "No difference has an interval (one seed each), so Holm corrects nothing."
    if not n:
        return f"Holm changes none of the {family} verdicts the unadjusted 95% intervals give."
    return (f"Holm changes {n} of the {family} verdicts the unadjusted 95% intervals give (their interval "
            "excludes 0, the corrected verdict is \"not distinguishable\").")


def blocks(study: Study, command: str, built: dict, rows: list[list[str]], notes: list[str],
           figs: list[doc.Figure]) -> list:
    out = [doc.Heading(f"Study {study.name}", 1),
           doc.Paragraph(f"Command: `{command}`. Study file: `{study.path}`. Seeds: "
                         f"{', '.join(map(str, study.seeds))}. Cells: mean ± sample standard deviation (sd) "
                         "over seeds, then each seed's value."),
           doc.Table(rows),
           doc.Paragraph("kNN: weighted 20-NN, T = 0.07, on the whole held-out split. Linear: the probe recipe "
                         "of the result file named in the column (default: linear.json). Raw pixels: the same "
                         "kNN and linear probe, by the same evaluation code, on the pixels of the same evaluation "
                         "view. Fine-tune: accuracy after the last epoch (the best epoch is chosen on the test "
                         "split and left out). " + SEED_ONLY)]
    if built["attention_per_layer"]:
        out += [doc.Heading("Attention distance per layer"),
                doc.Paragraph("Mean attention distance (px) of each layer, mean ± sd over seeds, beside uniform "
                              "attention's on the same grid (every query attending equally to every patch). "
                              "Below the uniform row attention favours near patches, above it far ones."),
                doc.Table(attention_table(built["attention_per_layer"]))]
    out += differences_blocks(study, built)
    if built["differences"]:
        out += [doc.Heading("Paired differences between arms"),
                doc.Paragraph(f"Same seeds paired; each sentence gives the mean difference and its unadjusted 95% "
                              f"interval (Student's t over seeds). The verdict words (higher / lower / not "
                              f"distinguishable) are Holm-corrected over the family of all "
                              f"{built['family']} differences below (pairs x metrics), at a family-wise error "
                              f"of 5%; \"not distinguishable\" gives the range the interval still allows. "
                              f"{holm_changes(built)}"),
                doc.Bullets([d["sentence"] for d in built["differences"]])]
    if notes:
        out += [doc.Heading("Notes"), doc.Bullets(notes)]
    return out + figs


def write_report(study: Study, command: str, prov: dict | None = None) -> dict:
    """report.md, report.html and study.json; `prov` (unmasked.provenance.record()) says which commit,
    machine and torch wrote the report, beside the devices the runs' summary.json name."""
    t0 = time.perf_counter()
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    built = build(study)
    raw = read_json_or_none(out / RAW_FILE)
    figs = figures(study, built, out)
    unfinished = [r.name for r in study.runs if not built["per_run"][r.name]["finished"]]
    notes = []
    if unfinished:
        notes.append(f"{len(unfinished)} of {len(study.runs)} runs not finished: {', '.join(unfinished)}")
    if not any(g["summary"]["train_pflops"] for g in built["groups"]):
        if len(unfinished) == len(study.runs):
            notes.append("training FLOPs: n/a (no run has finished yet; they are counted from a finished run's "
                         "config.json and summary.json)")
        else:
            notes.append("training FLOPs: n/a (no finished run's training step could be rebuilt from its "
                         "config.json)")
    for m in study.matches:  # epochs the study file did not type: where they come from
        notes.append(f"{group_label(m.arm, m.point)}: {m.why()}")
    pixels = pixel_reference(study, built, raw, notes)
    if pixels is None:
        notes.append("raw-pixel row: not computed yet (each kNN / linear evaluation writes it)")
    labels = protocol_labels(study, built)
    rows = _table(study, built, pixels, labels)
    devices = sorted({s["device"] for r in study.runs
                      if (s := read_json_or_none(r.dir / "summary.json")) and "device" in s})
    body = blocks(study, command, built, rows, notes, figs)
    if prov:
        body.insert(2, doc.Paragraph(f"Runs trained on: {', '.join(devices) or 'unknown'}. Report written with "
                                     f"{one_line(prov)}."))
    texts = doc.render(body, out, f"study {study.name}")
    files = [p.name for p in texts]
    result = {
        "study": study.name, "file": str(study.path), "out": str(out), "seeds": study.seeds,
        "arms": study.arms, "grid": study.grid, "evals": study.evals,
        "columns": rows[0],
        "runs": [{"name": r.name, "arm": r.arm, "point": r.point, "seed": r.seed, "dir": str(r.dir),
                  **built["per_run"][r.name]} for r in study.runs],
        "groups": [{k: g[k] for k in ("arm", "point", "label", "runs", "summary")} for g in built["groups"]],
        "differences": built["differences"], "attention_per_layer": built["attention_per_layer"],
        "holm": {"family": built["family"], "alpha": 0.05, "verdicts_changed": built["changed_by_holm"],
                 "sentence": holm_changes(built)},
        "match_compute": [{"arm": m.arm, "point": m.point, "reference": m.reference, "epochs": m.epochs,
                           "exact_epochs": m.exact_epochs, "flops_ratio": m.ratio} for m in study.matches],
        "raw_pixels": pixels, "notes": notes, "trained_on": devices, "provenance": prov,
        "files": files + ["study.json"] + doc.figures_of(figs),
        "time_s": round(time.perf_counter() - t0, 1),
    }
    texts[out / "study.json"] = json.dumps(result, indent=1) + "\n"
    atomic_write_texts(texts)  # all three or none: a full disk leaves the earlier report whole
    return result
