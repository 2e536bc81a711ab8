"""`unmasked study` end to end on a tiny study: killed and rerun, report-only, changed recipe."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from unmasked.cli import main
from unmasked.config import PretrainConfig, resolve_defaults
from unmasked.study import runner
from unmasked.study.spec import Run, load_study
from unmasked.train import checkpoint as ckpt

from .helpers import tiny_study


def _study_cli(path, *extra, **kw):
    return [sys.executable, "-m", "unmasked", "study", str(path), "--no-progress", *extra]


def _numbers(study):
    """Each run's kNN results and final weights."""
    out = {}
    for r in study.runs:
        knn = json.loads((r.dir / "knn.json").read_text())
        out[r.name] = (knn["results"], ckpt.load_checkpoint(r.dir / "checkpoint.pt")["objective"])
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        for k in a[name][1]:
            assert torch.equal(a[name][1][k], b[name][1][k]), (name, k)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """2 arms x 1 seed, run by the study in this process (its runs and evaluations are subprocesses)."""
    tmp = tmp_path_factory.mktemp("study")
    path = tiny_study(tmp, seeds="[0]")
    assert main(["study", str(path), "--no-progress"]) == 0
    return path


def _no_subprocess(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"started a subprocess: {a}")

    monkeypatch.setattr(runner.subprocess, "run", refuse)


def test_finished_study_reports_and_is_idempotent(finished, monkeypatch, capsys):
    study = load_study(finished)
    assert all(runner.is_finished(r) for r in study.runs)
    assert all(runner.eval_done(r, "knn") for r in study.runs)
    report = json.loads((study.out / "study.json").read_text())
    g = report["groups"][0]
    assert g["label"] == "mae" and g["summary"]["knn20_cls"]["n"] == 1
    assert [d["sentence"] for d in report["differences"] if d["metric"] == "knn20_cls"][0].startswith(
        "lut − mae kNN20 CLS: ")
    assert report["raw_pixels"]["knn"] >= 0 and report["raw_pixels"]["view"]  # from the runs' knn.json
    assert "data:image/png;base64," in (study.out / "report.html").read_text()  # kNN-monitor curves
    assert (study.out / "knn_monitor.png").is_file()
    _no_subprocess(monkeypatch)  # a rerun of a finished study starts nothing
    assert main(["study", str(finished), "--no-progress"]) == 0


def test_report_only_recomputes_nothing(finished, monkeypatch):
    study = load_study(finished)
    before = {p: p.stat().st_mtime_ns for r in study.runs for p in r.dir.rglob("*") if p.is_file()}
    _no_subprocess(monkeypatch)
    monkeypatch.setattr("unmasked.study.command.raw_pixel_knn", lambda *a: pytest.fail("raw pixels recomputed"))
    (study.out / "report.md").unlink()
    assert main(["study", str(finished), "--report-only"]) == 0
    after = {p: p.stat().st_mtime_ns for r in study.runs for p in r.dir.rglob("*") if p.is_file()}
    assert before == after
    assert (study.out / "report.md").is_file()


def test_changed_recipe_is_refused_naming_the_field(finished, monkeypatch, capsys):
    changed = finished.with_name("changed.toml")
    changed.write_text(finished.read_text().replace("patch_size = 4", "patch_size = 4\nmask_ratio = 0.6"))
    _no_subprocess(monkeypatch)
    assert main(["study", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "no longer matches runs made from it: run mae_seed0: mask_ratio = 0.6 in the study, 0.75 in" in err


def test_an_option_deleted_from_the_study_is_compared_with_its_default(finished, monkeypatch, capsys):
    """On an image folder the run would now get the default patch size (16), not the 4 it was made with."""
    changed = finished.with_name("deleted.toml")
    changed.write_text(finished.read_text().replace("patch_size = 4\n", ""))
    _no_subprocess(monkeypatch)
    assert main(["study", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "run mae_seed0: patch_size = 16 (the default, not set in the study) in the study, 4 in" in err


@pytest.mark.slow
def test_killed_study_continues_to_the_same_numbers(tmp_path):
    """2 arms x 2 seeds: uninterrupted, and SIGKILLed (study and child) while the second run trains."""
    reference = tiny_study(tmp_path / "ref")
    assert main(["study", str(reference), "--no-progress"]) == 0
    path = tiny_study(tmp_path / "killed")
    proc = subprocess.Popen(_study_cli(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    study = load_study(path)
    first, second = study.runs[0], study.runs[1]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if runner.is_finished(first) and (second.dir / "checkpoint.pt").is_file():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the study ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its current child; no handler runs
    proc.wait()
    assert not all(runner.is_finished(r) for r in study.runs)
    r = subprocess.run(_study_cli(path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_same(_numbers(study), _numbers(load_study(reference)))


def test_match_compute_counts_the_flops_the_finished_runs_report(finished):
    """The count made before anything runs (match_compute) is the one the report's compute column
    makes from each finished run's config.json and summary.json."""
    from unmasked.analysis.compute import training_compute
    from unmasked.study.matching import _flops_and_images

    for run in load_study(finished).runs:
        flops_per_image, per_epoch, epochs = _flops_and_images(run, "test")
        done = training_compute(run.dir)
        assert flops_per_image == pytest.approx(done["flops_per_image"], rel=1e-9), run.name
        assert per_epoch * epochs == done["images_seen"], run.name



def test_what_a_warm_start_took_from_its_source_is_no_change_of_the_study(tmp_path):
    """A warm-started arm's shape, LayerScale and positions come from its source (not the defaults the
    study would give now); an option the study sets is still compared, and a run from scratch too."""
    src = str(tmp_path / "src")
    saved = resolve_defaults(PretrainConfig.flat(objective="mae", data="fashion-mnist", init_from=src), True).to_dict()
    saved.update(model="vit_small", width=None, depth=6, heads=None, patch_size=14, layer_scale=1e-5,
                 pos_embed="learned", init_record={"source": src})
    run_dir = tmp_path / "arm"
    run_dir.mkdir()

    def mismatches(saved, **options):
        (run_dir / "config.json").write_text(json.dumps(saved))
        run = Run("arm_seed0", "arm", {}, 0, {"objective": "mae", "data": "fashion-mnist", "init_from": src,
                                              **options}, [], run_dir)
        return [m.split(" in the study")[0] for m in runner.config_mismatches(run)]

    assert mismatches(saved) == []
    assert mismatches(saved, pos_embed="sincos") == ["pos_embed = 'sincos'"]
    scratch = {k: v for k, v in saved.items() if k != "init_record"}
    assert mismatches(scratch) == [f"{f} (the default, not set" for f in (
        "model = 'vit_tiny'", "patch_size = 4", "layer_scale = 0.0", "pos_embed = 'sincos'")]
