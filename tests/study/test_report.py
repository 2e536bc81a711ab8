"""The study report from run folders written by hand: cells, differences, raw pixels, figures."""

import json
import math

from unmasked.study.report import write_report
from unmasked.study.spec import load_study

from .helpers import tiny_study

KNN = {"mae": {0: 80.0, 1: 81.0, 2: 82.0}, "lut": {0: 80.5, 1: 82.0, 2: 82.5}}


def _fake_run(d, knn, dist):
    d.mkdir(parents=True)
    (d / "checkpoint.pt").write_bytes(b"x")
    (d / "summary.json").write_text(json.dumps({"completed": True, "steps": 10, "time_s": 120.0}))
    view = {"transform": {"description": "native 16 px image"}}
    (d / "knn.json").write_text(json.dumps({"top1": {"cls": knn, "mean": knn + 1}, "pixels": {"top1": 84.6},
                                            **view}))
    (d / "linear.json").write_text(json.dumps({"top1": {"cls": knn + 2, "mean": knn + 3}, "pixels": {"top1": 83.1},
                                               **view}))
    (d / "analysis").mkdir()
    (d / "analysis" / "analysis.json").write_text(json.dumps({
        "attention_distance": {"last_layers": dist, "per_layer": [dist - 2, dist - 1, dist], "uniform": 14.4},
        "spectrum": {"rankme": {"cls": 50.0, "mean": 60.0}}}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "epoch": s / 10, "knn20_cls": knn - 5 + s})
                                             + "\n" for s in (5, 10)))


def test_report_from_finished_runs(tmp_path):
    study = load_study(tiny_study(tmp_path, seeds="[0, 1, 2]", evals="knn = true\nlinear = true\nanalyze = true"))
    for r in study.runs:
        _fake_run(r.dir, KNN[r.arm][r.seed], 11.0 + r.seed if r.arm == "mae" else 12.0 + r.seed)
    res = write_report(study, "unmasked study tiny.toml")
    mae = res["groups"][0]["summary"]["knn20_cls"]
    assert mae["mean"] == 81.0 and mae["std"] == 1.0 and mae["values"] == [80.0, 81.0, 82.0]
    d = next(x for x in res["differences"] if x["metric"] == "knn20_cls")
    assert math.isclose(d["half_width"], 4.3027 / 6)  # hand-computed in test_stats
    # one pair x 7 metrics with an interval; kNN20 CLS alone has p = 1 - 4 / sqrt(18) = 0.0572
    assert res["holm"]["family"] == 7 and d["family"] == 7
    assert d["sentence"] == ("lut − mae kNN20 CLS: +0.67 points (95% interval -0.05 to +1.38, 3 seeds): not "
                             "distinguishable after Holm over 7: between -0.05 and +1.38 points; three seeds "
                             "cannot tell")
    dist = next(x for x in res["differences"] if x["metric"] == "attn_distance")
    # every seed 1 px apart: no spread, p = 0, still "higher" after Holm
    assert dist["mean"] == 1.0 and dist["half_width"] == 0.0 and dist["verdict"] == "higher"
    md = (study.out / "report.md").read_text()
    assert "| mae | 81.00 ± 1.00 sd (80.00, 81.00, 82.00) |" in md
    assert "| raw pixels (no training) | 84.60 | 84.60 | 83.10 | 83.10 |" in md
    assert "Holm-corrected over the family of all 7 differences" in md and "seed variation only" in md
    assert "Holm changes none of the 7 verdicts" in md and res["holm"]["verdicts_changed"] == 0
    assert "attention distance, last layers (px)" not in md  # the column names the layers it averages
    assert "training FLOPs: n/a" in md or "training PFLOPs" in md
    for name in ("attention_distance.png", "knn_monitor.png"):
        assert (study.out / name).is_file() and name in md
    # per layer: mae's seeds put layer 3 at 11, 12, 13 px; uniform attention's line on the same grid
    per_layer = res["attention_per_layer"]
    assert per_layer["uniform"] == 14.4 and [r["label"] for r in per_layer["groups"]] == ["mae", "lut"]
    assert per_layer["groups"][0]["layers"][2]["values"] == [11.0, 12.0, 13.0]
    assert "| mae | 10.00 ± 1.00 sd | 11.00 ± 1.00 sd | 12.00 ± 1.00 sd |" in md
    assert "| uniform attention (same grid) | 14.40 | 14.40 | 14.40 |" in md
    html = (study.out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<td>raw pixels (no training)</td>" in html


def test_old_raw_pixel_file_from_a_training_crop_is_not_shown(tmp_path):
    study = load_study(tiny_study(tmp_path, seeds="[0]", evals="knn = true"))
    for r in study.runs:
        r.dir.mkdir(parents=True)
        (r.dir / "knn.json").write_text(json.dumps({"top1": {"cls": 80.0, "mean": 81.0}}))  # before "pixels"
    (study.out / "raw_pixels.json").write_text(json.dumps({"top1": {"20": 84.6}}))
    res = write_report(study, "unmasked study tiny.toml")
    assert res["raw_pixels"] is None and any("predates the evaluation view" in n for n in res["notes"])
    assert "raw pixels (no training)" not in (study.out / "report.md").read_text()


def test_finetune_column_is_the_last_epoch_and_a_variant_protocol_is_labelled(tmp_path):
    evals = 'knn = { k = [5] }\nlinear = { epochs = 3 }\nfinetune = true'
    study = load_study(tiny_study(tmp_path, seeds="[0]", evals=evals))
    for r in study.runs:
        r.dir.mkdir(parents=True)
        (r.dir / "knn-k5.json").write_text(json.dumps({"top1": {"cls": 70.0, "mean": 71.0}}))
        (r.dir / "knn.json").write_text(json.dumps({"top1": {"cls": 1.0, "mean": 1.0}}))  # not what the study ran
        (r.dir / "linear-epochs3.json").write_text(json.dumps({"top1": {"cls": 60.0, "mean": 61.0}}))
        (r.dir / "finetune.json").write_text(json.dumps({"top1": {"best": 95.0, "last": 90.0}}))
    res = write_report(study, "unmasked study tiny.toml")
    g = res["groups"][0]["summary"]
    assert g["knn20_cls"]["mean"] == 70.0 and g["linear_cls"]["mean"] == 60.0 and g["finetune"]["mean"] == 90.0
    assert "kNN20 CLS [knn-k5] (%)" in res["columns"] and "linear CLS [linear-epochs3] (%)" in res["columns"]
    assert "fine-tune, last epoch (%)" in res["columns"] and "95.00" not in (study.out / "report.md").read_text()


def test_grid_plots_and_unfinished_runs(tmp_path):
    arms = '[arms.lut]\nobjective = "lut"\n[grid]\nmask_ratio = [0.5, 0.9]\n'
    study = load_study(tiny_study(tmp_path, arms=arms, evals="knn = true"))
    for r in study.runs[:-1]:
        _fake_run(r.dir, 70.0 + 10 * r.point["mask_ratio"] + r.seed, 12.0)
    res = write_report(study, "unmasked study x.toml")
    assert {"grid_mask_ratio_knn20_cls.png", "grid_mask_ratio_knn20_mean.png"} <= set(res["files"])
    assert any("1 of 4 runs not finished: lut_mask-ratio0.9_seed1" in n for n in res["notes"])


def test_the_study_reads_the_file_its_evaluation_options_write():
    from unmasked.study.runner import result_file

    cfg = {"data": "fashion-mnist", "img_size": 28}
    assert result_file("knn", [], cfg) == "knn.json"
    assert result_file("knn", ["--img-size", "28"], cfg) == "knn.json"  # the encoder's own size
    assert result_file("knn", ["--img-size", "56"], cfg) == "knn-img56.json"
    assert result_file("knn", ["--k", "5", "--temperature", "0.5"], cfg) == "knn-k5-T0.5.json"
    assert result_file("linear", ["--epochs", "30", "--data", "/x/other"], cfg) == "linear-epochs30-on-other.json"


def test_report_says_how_many_verdicts_holm_changes(tmp_path):
    """lut - mae = 1, 2, 1.5 points on kNN and linear (p = 0.035 each, 95% interval excluding 0),
    and exactly 1 px on the attention distance (p = 0): Holm over 7 keeps only the latter."""
    knn = {"mae": {0: 80.0, 1: 81.0, 2: 82.0}, "lut": {0: 81.0, 1: 83.0, 2: 83.5}}
    study = load_study(tiny_study(tmp_path, seeds="[0, 1, 2]", evals="knn = true\nlinear = true\nanalyze = true"))
    for r in study.runs:
        _fake_run(r.dir, knn[r.arm][r.seed], 11.0 + r.seed if r.arm == "mae" else 12.0 + r.seed)
    res = write_report(study, "unmasked study tiny.toml")
    changed = [d for d in res["differences"] if d.get("verdict_unadjusted") != d["verdict"]]
    assert {d["metric"] for d in changed} == {"knn20_cls", "knn20_mean", "linear_cls", "linear_mean"}
    assert all(d["verdict_unadjusted"] == "higher" and d["verdict"] == "not distinguishable" for d in changed)
    assert res["holm"]["verdicts_changed"] == 4 and res["holm"]["family"] == 7
    md = (study.out / "report.md").read_text()
    assert "Holm changes 4 of the 7 verdicts the unadjusted 95% intervals give" in md
    stored = json.loads((study.out / "study.json").read_text())
    assert stored["holm"]["verdicts_changed"] == 4


def test_report_says_where_matched_epochs_come_from(tmp_path):
    arms = '[arms.mae]\nepochs = 6\n[arms.lut]\nmatch_compute = "mae"\nwarmup_epochs = 0.1\n'
    study = load_study(tiny_study(tmp_path, arms=arms, seeds="[0]", evals="knn = true"))
    for r in study.runs:
        _fake_run(r.dir, 80.0, 11.0)
    res = write_report(study, "unmasked study tiny.toml")
    (m,) = study.matches
    assert res["match_compute"] == [{"arm": "lut", "point": {}, "reference": "mae", "epochs": m.epochs,
                                     "exact_epochs": m.exact_epochs, "flops_ratio": m.ratio}]
    assert f"lut: epochs {m.epochs} from match_compute = 'mae'" in (study.out / "report.md").read_text()


def test_the_pixel_row_takes_each_protocol_from_a_run_that_has_it(tmp_path):
    """A study still running: the first run has no linear result yet, another has; no false note."""
    study = load_study(tiny_study(tmp_path, seeds="[0, 1]", evals="knn = true\nlinear = true"))
    for r in study.runs:
        _fake_run(r.dir, 80.0, 11.0)
    (study.runs[0].dir / "linear.json").unlink()
    res = write_report(study, "unmasked study tiny.toml")
    assert res["raw_pixels"] == {"knn": 84.6, "linear": 83.1, "view": "native 16 px image"}
    assert not any("different pixel rows" in n for n in res["notes"])
    assert "| raw pixels (no training) | 84.60 | 84.60 | 83.10 | 83.10 |" in (study.out / "report.md").read_text()


def test_a_full_disk_while_the_report_is_written_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    """The disk fills up halfway through report.html (report.md is already in its temp file): the
    earlier report.md, report.html and study.json stay as they were, no temp file is left, and the
    command says which file in one line (exit 1)."""
    import errno
    import os

    import matplotlib.figure

    from unmasked import files
    from unmasked.cli import main

    path = tiny_study(tmp_path, seeds="[0]", evals="knn = true\nanalyze = true")
    study = load_study(path)
    for r in study.runs:
        _fake_run(r.dir, 80.0, 11.0)
    assert main(["study", str(path), "--report-only"]) == 0
    names = ("report.md", "report.html", "study.json", "attention_distance.png")
    before = {n: (study.out / n).read_bytes() for n in names}
    (study.runs[0].dir / "knn.json").write_text(json.dumps({"top1": {"cls": 10.0, "mean": 11.0}}))
    real = files._write_text_file

    def fills_up_in_the_html(tmp, text):
        if ".report.html." in tmp:
            with open(tmp, "w") as f:
                f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, text)

    monkeypatch.setattr(files, "_write_text_file", fills_up_in_the_html)
    capsys.readouterr()
    assert main(["study", str(path), "--report-only"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"unmasked: error: could not save {study.out / 'report.html'} (No space left on device)")
    assert "--report-only" in err
    assert {n: (study.out / n).read_bytes() for n in names if n != "attention_distance.png"} == \
        {n: before[n] for n in names if n != "attention_distance.png"}
    assert not [p.name for p in study.out.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(files, "_write_text_file", real)

    def savefig_fills_up(self, fname, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_fills_up)
    assert main(["study", str(path), "--report-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"unmasked: error: could not save {study.out / 'attention_distance.png'} "
                          "(No space left on device)"), err
    assert {n: (study.out / n).read_bytes() for n in names} == before
    assert not [p.name for p in study.out.iterdir() if p.name.endswith(".tmp")]


def test_the_report_of_a_study_with_no_finished_run_says_so(tmp_path):
    study = load_study(tiny_study(tmp_path, seeds="[0]"))
    study.out.mkdir(parents=True)
    res = write_report(study, "unmasked study tiny.toml")
    flops = [n for n in res["notes"] if n.startswith("training FLOPs")]
    assert flops == ["training FLOPs: n/a (no run has finished yet; they are counted from a finished run's "
                     "config.json and summary.json)"]
    assert not any("not available" in n for n in res["notes"])
    assert "no run has finished yet" in (study.out / "report.md").read_text()
