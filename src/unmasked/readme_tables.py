"""README's result tables, written from the committed result files and checked against them.

The README holds each generated table between two marker comments:

    <!-- results:demo -->              one row per objective, from results/demo-<objective>/demo.json
    <!-- /results:demo -->
    <!-- results:study NAME -->        the study's table, from results/NAME/study.json
    <!-- /results:study NAME -->
    <!-- results:differences NAME -->  its paired differences (kNN20, linear, attention), Holm's verdicts
    <!-- /results:differences NAME -->
    <!-- results:layers NAME -->       its attention distance per layer, beside uniform attention's
    <!-- /results:layers NAME -->
    <!-- results:transcript NAME -->   what a command printed, from results/NAME/transcript.txt
    <!-- /results:transcript NAME -->

`write` replaces what is between the markers; `check` regenerates every block and names each
cell that differs from its artifact, each block whose artifact is missing, and each table in the
whole README whose rows do not have the header's column count.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from unmasked.console import fmt_duration
from unmasked.study.report import METRICS, attention_table, mean_sd

MARKER = re.compile(r"<!-- results:(\w+)(?: ([A-Za-z0-9][A-Za-z0-9._-]*))? -->\n(.*?)<!-- /results:\1(?: \2)? -->",
                    re.S)
STUDY_COLUMNS = [("knn20_cls", "kNN20 CLS (%)", 2), ("knn20_mean", "kNN20 mean-pool (%)", 2),
                 ("linear_cls", "linear CLS (%)", 2), ("finetune", "fine-tune, last epoch (%)", 2),
                 ("attn_distance", "attention distance (px)", 2), ("rankme_cls", "RankMe CLS", 1),
                 ("pretrain_min", "pretraining (min)", 1), ("train_pflops", "training PFLOPs", 3)]
# the paired differences a page shows: kNN, the linear probe, and attention distance (what a locality
# study asks); the rest (RankMe, the mean-pooled probe) stay in study.json and report.md
DIFF_METRICS = ("knn20_cls", "knn20_mean", "linear_cls", "attn_distance")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (the README block that names it needs this file)") from None


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n"


def demo_block(results: Path, _name: str | None = None) -> str:
    files = sorted(results.glob("demo-*/demo.json"))
    if not files:
        raise FileNotFoundError(f"{results}/demo-*/demo.json: missing (the README's demo block needs them)")
    rows = [["command", "objective, budget", "precision", "pretraining alone", "in all (+ kNN)",
             "kNN20 CLS / mean-pooled (%)"]]
    pixels = None
    for f in files:
        d = _read(f)
        p, k = d["pretrain"], d["knn"]
        rows.append([f"`{d['command']}`",
                     f"{d['objective']}, {p['epochs']:g} epoch{'' if p['epochs'] == 1 else 's'} "
                     f"({p['images_seen']:,} images)",
                     p["precision"], fmt_duration(p["time_s"]), fmt_duration(d["time_s"]),
                     f"{k['top1']['cls']:.2f} / {k['top1']['mean']:.2f}"])
        pixels = pixels if pixels is not None else k.get("pixels_top1")
    if pixels is not None:
        rows.append(["(the `pixels` row the demo prints)", "raw pixels, no training", "—", "—", "—", f"{pixels:.2f}"])
    return _table(rows)


def study_block(results: Path, name: str) -> str:
    s = _read(results / name / "study.json")
    present = [(k, label, d) for k, label, d in STUDY_COLUMNS if any(g["summary"].get(k) for g in s["groups"])]
    columns = dict(zip([k for k, *_ in _study_metric_keys()], s.get("columns", [])[1:]))
    rows = [["arm"] + [columns.get(k, label) for k, label, _ in present]]
    for g in s["groups"]:
        rows.append([g["label"]] + [mean_sd(g["summary"].get(k), d) for k, _, d in present])
    px = s.get("raw_pixels") or {}
    if px:
        cell = {"knn20_cls": px.get("knn"), "knn20_mean": px.get("knn"), "linear_cls": px.get("linear")}
        rows.append(["raw pixels (no training)"] + [f"{cell[k]:.2f}" if cell.get(k) is not None else "—"
                                                     for k, _, _ in present])
    return _table(rows)


def _study_metric_keys():
    return METRICS


def differences_block(results: Path, name: str) -> str:
    s = _read(results / name / "study.json")
    family = s.get("holm", {}).get("family")
    rows = [["difference", "metric", "mean (points; px for distances)", "unadjusted 95% interval",
             f"verdict (Holm over {family})"]]
    labels = {k: label for k, label, *_ in _study_metric_keys()}
    for d in s["differences"]:
        if d["metric"] not in DIFF_METRICS or d.get("low") is None:
            continue
        where = "".join(f", {k}={v}" for k, v in d["point"].items())
        rows.append([f"{d['b']} − {d['a']}{where}", labels[d["metric"]].replace(" (%)", ""), f"{d['mean']:+.2f}",
                     f"{d['low']:+.2f} to {d['high']:+.2f}", d["verdict"]])
    return _table(rows)


def layers_block(results: Path, name: str) -> str:
    s = _read(results / name / "study.json")
    if not s.get("attention_per_layer"):
        raise ValueError(f"{results / name / 'study.json'}: no attention distance per layer (the study ran no "
                         "analysis, or its report predates the per-layer table; rerun it with --report-only)")
    return _table(attention_table(s["attention_per_layer"]))


def transcript_block(results: Path, name: str) -> str:
    path = results / name / "transcript.txt"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (the README block that names it needs this file)") from None
    return "```\n" + text.rstrip("\n") + "\n```\n"


BLOCKS = {"demo": demo_block, "study": study_block, "differences": differences_block,
          "layers": layers_block, "transcript": transcript_block}


def _generate(kind: str, name: str | None, results: Path) -> str:
    if kind not in BLOCKS:
        raise ValueError(f"README marker results:{kind}: unknown block; expected one of {', '.join(BLOCKS)}")
    if kind != "demo" and not name:
        raise ValueError(f"README marker results:{kind} needs a study name (<!-- results:{kind} NAME -->)")
    return BLOCKS[kind](results, name)


def write(readme: str, results: Path) -> str:
    """The README with every marked block regenerated from the files under `results`."""
    def sub(m):
        tail = f" {m[2]}" if m[2] else ""
        return f"<!-- results:{m[1]}{tail} -->\n{_generate(m[1], m[2], results)}<!-- /results:{m[1]}{tail} -->"

    return MARKER.sub(sub, readme)


def tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """Every Markdown table: (line number of its header, rows of cells), separator row left out."""
    out, current, start = [], [], 0
    for i, line in enumerate(text.splitlines() + [""], 1):
        if line.startswith("|"):
            if not current:
                start = i
            current.append(line)
            continue
        if current:
            rows = [_cells(r) for r in current]
            out.append((start, [r for j, r in enumerate(rows)
                                if not (j == 1 and all(set(c) <= set("-: ") for c in r))]))
            current = []
    return out


def _cells(line: str) -> list[str]:
    body = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def check(readme: str, results: Path) -> list[str]:
    """Problems, one line each; [] when every marked table equals its artifact and every table's rows
    have the header's column count."""
    problems = []
    for line, rows in tables(readme):
        for j, r in enumerate(rows[1:], 2):
            if len(r) != len(rows[0]):
                problems.append(f"README line {line}: table row {j} has {len(r)} cells, its header {len(rows[0])}: "
                                f"| {' | '.join(r)} |")
    for m in MARKER.finditer(readme):
        block = f"results:{m[1]}" + (f" {m[2]}" if m[2] else "")
        try:
            want = _generate(m[1], m[2], results)
        except (FileNotFoundError, ValueError, KeyError) as e:
            problems.append(f"{block}: {e}")
            continue
        if m[1] == "transcript":
            if m[3] != want:
                problems.append(f"{block}: the README's text differs from {results / m[2] / 'transcript.txt'}")
            continue
        have_t, want_t = tables(m[3]), tables(want)
        if len(have_t) != 1:
            problems.append(f"{block}: expected one table between the markers, found {len(have_t)}")
            continue
        have, gen = have_t[0][1], want_t[0][1]
        if len(have) != len(gen):
            problems.append(f"{block}: {len(have)} rows, the artifact gives {len(gen)}")
        for i, (hr, gr) in enumerate(zip(have, gen)):
            for j, (hc, gc) in enumerate(zip(hr, gr)):
                if hc != gc:
                    problems.append(f"{block}: row {i + 1} ({gr[0]}), column {j + 1} ({gen[0][j]}): README has "
                                    f"{hc!r}, the artifact gives {gc!r}")
            if len(hr) != len(gr):
                problems.append(f"{block}: row {i + 1} has {len(hr)} columns, the artifact gives {len(gr)}")
    return problems


def artifacts(results: Path) -> list[str]:
    """The blocks the committed files call for: a study block per results/<name>/study.json, one demo block."""
    out = [f"results:study {p.parent.name}" for p in sorted(results.glob("*/study.json"))]
    return out + (["results:demo"] if any(results.glob("demo-*/demo.json")) else [])


def check_pages(pages: dict, results: Path) -> list[str]:
    """`check` over several pages ({path: text}), each problem prefixed with its page, plus each
    block the committed files call for that no page holds."""
    problems = [f"{path}: {line}" for path, text in pages.items() for line in check(text, results)]
    every = "".join(pages.values())
    return problems + [f"{b}: committed in {results} but no page has such a block" for b in artifacts(results)
                       if f"<!-- {b} -->" not in every]
