"""What the commands print: the pretraining summary and each evaluation's result.

Below the command line and the demo (it imports nothing of unmasked), so that `unmasked demo`
prints with the same functions as `unmasked pretrain` and `unmasked eval` without importing the CLI.
"""

from __future__ import annotations

import sys


def fmt_duration(s: float | None) -> str:
    """Seconds as people read them: "45 s", "6 min 25 s", "1 h 02 min" ("?" when unknown)."""
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def print_summary(s: dict, knn: dict | None = None) -> None:
    state = "done" if s["completed"] else f"stopped at step {s['steps']} of {s['total_steps']}"
    print(f"pretraining {state}")
    rows = [
        ("objective", s["objective"]),
        ("model", s["model"]),
        ("data", f"{s['data']} ({s['train_images']:,} training images)"),
        ("device", f"{s['device']}, {s['precision']}"
                   + (f", {s['world_size']} processes" if s["world_size"] > 1 else "")),
        ("images seen", f"{s['images_seen']:,} ({s['epochs']} epochs, {s['steps']} steps)"),
        ("time", f"{s['time_s']:.0f} s ({s['images_per_s']:.0f} images/s"
                 + (f", data wait {s['data_wait']:.0%})" if s.get("data_wait") is not None else ")")),
    ]
    if s.get("skipped_files"):
        rows.append(("skipped files", f"{s['skipped_files']} unreadable image(s), each named in a warning above"))
    if s.get("skipped_steps"):
        rows.append(("skipped steps", f"{s['skipped_steps']} (non-finite loss, --nan skip)"))
    if knn is not None:
        rows.append((f"kNN top-1 (k={knn['headline_k']})",
                     f"CLS {knn['top1']['cls']:.2f}%, mean-pooled {knn['top1']['mean']:.2f}% "
                     f"({knn['test_images']:,} {knn['test_split']} images)"))
        if "pixels" in knn:
            px = knn["pixels"]["top1"]
            rows.append(("  raw pixels", f"{px:.2f}% (same kNN on the pixels, the reference)"))
            gaps = {kind: knn["top1"][kind] - px for kind in ("cls", "mean")}
            verdict = "the encoder beats raw pixels" if max(gaps.values()) > 0 else "raw pixels still win"
            rows.append(("  vs pixels", f"CLS {gaps['cls']:+.2f}, mean-pooled {gaps['mean']:+.2f} points ({verdict})"))
    rows.append(("run folder", s["run_dir"]))
    for k, v in rows:
        print(f"  {k:<18} {v}")


def print_knn(result: dict) -> None:
    print(f"kNN on {result['data']} ({result['train_images']:,} train -> {result['test_images']:,} "
          f"{result['test_split']} images, T = {result['temperature']})")
    ks = result["ks"]
    used = result.get("k_used", {})
    labels = [f"k={k}" if used.get(str(k), k) == k else f"k={used[str(k)]}" for k in ks]
    print("  feature  " + "".join(f"  {lab:<8}" for lab in labels))
    for kind, label in (("cls", "CLS"), ("mean", "mean-pool")):
        row = result["results"][kind]
        print(f"  {label:<9}" + "".join(f"  {row[str(k)]['top1']:6.2f}%" for k in ks))
    if "pixels" in result:  # the reference: the same kNN on the raw pixels of the same view
        row = result["pixels"]["results"]
        print(f"  {'pixels':<9}" + "".join(f"  {row[str(k)]['top1']:6.2f}%" for k in ks))
    if any(used.get(str(k), k) != k for k in ks):
        print(f"  (k above the {result['train_images']:,} training images uses all of them; the k used is shown)")
    print(f"  (top-1 accuracy on {result.get('transform', {}).get('description', 'the evaluation view')}; "
          f"top-5 and all values in {result.get('file', 'knn.json')})")


def print_linear(r: dict, optimizer: str) -> None:
    print(f"linear probe on {r['data']} ({r['train_images']:,} train -> {r['test_images']:,} {r['test_split']}; "
          f"{optimizer.upper()}, batch {r['recipe']['batch_size']}, {r['recipe']['epochs']} epochs)")
    for kind, label in (("cls", "CLS"), ("mean", "mean-pool")):
        res = r["results"][kind]
        top5 = f", top-5 {res['top5']:.2f}%" if "top5" in res else ""
        print(f"  {label:<9}  top-1 {res['top1']:.2f}%{top5}")
    px = r["pixels"]
    top5 = f", top-5 {px['top5']:.2f}%" if "top5" in px else ""
    print(f"  {'pixels':<9}  top-1 {px['top1']:.2f}%{top5}  (the same probe on raw pixels)")


def print_finetune(r: dict) -> None:
    print(f"fine-tuning on {r['data']} ({r['train_images']:,} train -> {r['test_images']:,} {r['test_split']}, "
          f"{r['steps']} steps): top-1 {r['top1']['last']:.2f}% after the last epoch (best epoch "
          f"{r['best']['epoch']}: {r['top1']['best']:.2f}%, chosen on the test split, for reference only)")


def print_analysis(r: dict, out: str) -> None:
    ad = r["attention_distance"]
    print(f"analysis of {r['label']} on {r['images']} {r['split']} images of {r['data']}")
    print("  mean attention distance per layer (px): " + " ".join(f"{v:.1f}" for v in ad["per_layer"]))
    print(f"  last {ad['last_layers_count']} layer(s): {ad['last_layers']:.2f} px (uniform attention: "
          f"{ad['uniform']:.2f} px)")
    print("  attention NMI per layer: " + " ".join(f"{v:.2f}" for v in r["attention_nmi"]["per_layer"]))
    rk = r["spectrum"]["rankme"]
    print(f"  RankMe: CLS {rk['cls']:.1f}, mean-pooled {rk['mean']:.1f} (of {r['spectrum']['images']} images)")
    if not r.get("not_saved"):  # else the command names what could not be stored
        print(f"  files in {out}: analysis.json, " + ", ".join(
            f for v in r["files"].values() for f in (v if isinstance(v, list) else [v])))


def warn_unsaved(result: dict) -> int:
    """After the numbers are printed: say which files could not be stored (exit 1), else exit 0."""
    for problem in result.get("not_saved", []):
        print(f"unmasked: warning: {problem}; the result above is printed but not stored", file=sys.stderr)
    return 1 if result.get("not_saved") else 0


def print_monitor(records: list[dict], bank: int, queries: int, figure: str | None = None,
                  columns: int = 10) -> None:
    """The kNN monitor's curve (metrics.jsonl records; `bank` training images, `queries` held-out
    ones), beside the same kNN on those images' raw pixels; at most `columns` checks (evenly spaced,
    the last always): the figure has them all."""
    if not records:
        return
    shown = records if len(records) <= columns else \
        [records[round(i * (len(records) - 1) / (columns - 1))] for i in range(columns)]
    print(f"kNN monitor during pretraining (20-NN, {bank:,} training images -> {queries:,} held-out queries)")
    print("  epoch    " + "".join(f"  {r['epoch']:>6.4g}" for r in shown))
    for key, label in (("knn20_cls", "CLS"), ("knn20_mean", "mean-pool")):
        print(f"  {label:<9}" + "".join(f"  {r[key]:5.1f}%" for r in shown))
    pixels = records[-1].get("knn20_pixels")
    if pixels is not None:
        best = max(records[-1]["knn20_cls"], records[-1]["knn20_mean"])
        crossed = next((r["epoch"] for r in records if max(r["knn20_cls"], r["knn20_mean"]) > pixels), None)
        end = f"ends {best - pixels:.1f} points above" if best > pixels else f"ends {pixels - best:.1f} points below"
        where = f"crossed at epoch {crossed:.4g}, {end}" if crossed is not None else f"the encoder {end}"
        print(f"  {'pixels':<9}  {pixels:5.1f}% on the same images ({where})")
    if figure:
        print(f"  figure     {figure}")
