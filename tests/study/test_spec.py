"""Study files: what they expand to, and every bad entry named."""

from pathlib import Path

import pytest

from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.study.spec import load_study, run_name

from .helpers import tiny_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_committed_studies_expand():
    cpu = load_study(STUDIES / "fm-cpu.toml")
    assert [r.name for r in cpu.runs][:3] == ["mae_seed0", "mae_seed1", "mae_seed2"]
    assert len(cpu.runs) == 15 and cpu.pairs[0] == ("lut", "mae")
    assert [r.options["encoder"] for r in cpu.runs if r.arm == "random"] == ["random:128x6x4/7"] * 3
    w0 = next(r for r in cpu.runs if r.arm == "lut-w0")
    assert w0.options["lut_weight"] == 0.0 and w0.options["objective"] == "lut"
    assert "--warmup-epochs" in cpu.evals["linear"]
    teacher = load_study(STUDIES / "lut-teacher-cpu.toml")
    assert teacher.pairs == [("lut", "lut-bn")] and len(teacher.runs) == 6
    assert next(r for r in teacher.runs if r.arm == "lut-bn").options["teacher_mode"] == "train"
    ablation = load_study(STUDIES / "ablation-cpu.toml")
    assert len(ablation.runs) == 12
    assert {tuple(r.point.values()) for r in ablation.runs} == {(m, w) for m in (0.5, 0.75, 0.9) for w in (0.25, 1.0)}
    gpu = load_study(STUDIES / "fm-gpu.toml")
    assert all(r.options["batch_size"] == 512 and r.options["epochs"] == 40 for r in gpu.runs)
    assert len(gpu.seeds) == 3 and "finetune" in gpu.evals


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_study_file_loads(path):
    study = load_study(path)
    assert study.runs and all(r.options.get("objective") or r.options.get("encoder") for r in study.runs)


def test_the_budget_and_locality_studies_ask_what_they_say():
    budget = load_study(STUDIES / "cpu-budget-mae.toml")
    assert [r.options["epochs"] for r in budget.runs] == [2, 5, 10] and budget.seeds == [0]
    seeds = load_study(STUDIES / "cpu-budget-lut-seeds.toml")
    search = load_study(STUDIES / "cpu-budget-lut.toml")
    by_name = {r.name: r.options for r in search.runs}
    assert all(by_name[r.name] == r.options for r in seeds.runs if r.seed == 0)  # seed 0 is the search's run
    locality = load_study(STUDIES / "locality-cpu.toml")
    assert {r.options.get("patch_size") for r in locality.runs if r.arm != "random"} == {4}
    assert [r.options["encoder"] for r in locality.runs if r.arm == "random"] == ["random:128x6x4/4"] * 3


def test_run_names_and_kebab_keys(tmp_path):
    assert run_name("lut", {"mask_ratio": 0.9, "lut_weight": 1.0}, 2) == "lut_mask-ratio0.9_lut-weight1_seed2"
    study = load_study(tiny_study(tmp_path, extra="mask-ratio = 0.6"))
    assert all(r.options["mask_ratio"] == 0.6 and r.options["knn_every"] == 1.0 for r in study.runs)
    assert study.runs[0].dir == tmp_path / "tiny" / "mae_seed0"


@pytest.mark.parametrize("extra,arms,match", [
    ("mask_ratioo = 0.5", None, r"\[recipe\]: unknown option 'mask_ratioo'"),
    ("seed = 3", None, r"\[recipe\]: seed cannot be set here \(use the study's seeds"),
    ("mask_ratio = 'lots'", None, r"run mae_seed0: argument --mask-ratio: invalid float value: 'lots'"),
    ("", '[arms.x]\nobjective = "sim"\n', r"\[arms.x\] objective = 'sim': expected one of mae, lut"),
    ("", '[arms."a b"]\nobjective = "mae"\n', r"arm name 'a b'"),
    ("", '[arms.x]\nmask_ratio = 0.5\n',
     r"\[arms.x\] has no objective \(set objective = ... in the arm or in \[recipe\]\)"),
    ("", '[arms.lut]\nlut_weight = 0.5\n[grid]\nlut_weight = [0.1, 0.2]\n',
     r"\[grid\] lut_weight is also set by \[arms.lut\]"),
])
def test_bad_entries_are_named(tmp_path, extra, arms, match):
    with pytest.raises(UserError, match=match):
        load_study(tiny_study(tmp_path, extra=extra, arms=arms))


def test_objective_choices_come_from_the_registry(tmp_path, monkeypatch):
    """A new objective needs no change here: the study accepts what `unmasked pretrain` accepts."""
    from unmasked.objectives import registry

    real = registry.names
    monkeypatch.setattr(registry, "names", lambda: (*real(), "newobj"))
    study = load_study(tiny_study(tmp_path, arms='[arms.newobj]\n'))
    assert study.runs[0].options["objective"] == "newobj"


def test_the_recipe_may_name_every_arm_s_objective(tmp_path):
    study = load_study(tiny_study(tmp_path, extra='objective = "lut"',
                                  arms='[arms.a]\nmask_ratio = 0.5\n[arms.b]\nobjective = "mae"\n'))
    assert {r.arm: r.options["objective"] for r in study.runs} == {"a": "lut", "b": "mae"}


@pytest.mark.parametrize("evals,match", [
    ("knn = { kk = 3 }", r"\[evals\] knn: unknown option 'kk'"),
    ("linear = { epochs = 'ten' }", r"\[evals\] linear: argument --epochs: invalid int value"),
    ("probe = true", r"\[evals\] probe: unknown evaluation"),
])
def test_bad_evals_are_named(tmp_path, evals, match):
    with pytest.raises(UserError, match=match):
        load_study(tiny_study(tmp_path, evals=evals))


def test_an_unknown_evals_key_names_the_file_the_table_and_the_accepted_keys(tmp_path):
    path = tiny_study(tmp_path, evals="knn = { neighbours = 5 }")
    with pytest.raises(UserError) as e:
        load_study(path)
    message = str(e.value)
    assert message.startswith(f"study file {path}: [evals] knn: unknown option 'neighbours'; expected one of ")
    accepted = message.split("expected one of ", 1)[1].split(", ")
    assert {"k", "temperature", "img_size", "batch_size", "data"} <= set(accepted)
    assert "epochs" not in accepted  # the linear probe's, not kNN's


@pytest.mark.parametrize("evals,match", [
    ("knn = { temperature = nan }", r"\[evals\] knn: --temperature nan: must be a finite number above 0"),
    ("knn = { k = [20, 0] }", r"\[evals\] knn: --k 0: must be a positive integer"),
    ("finetune = { layer_decay = 1.5 }", r"\[evals\] finetune: --layer-decay 1.5: must be in \(0, 1\]"),
    ("analyze = { images = 0 }", r"\[evals\] analyze: --images 0: must be a positive integer"),
])
def test_evals_values_are_checked_by_the_settings_rules_when_the_study_loads(tmp_path, evals, match):
    with pytest.raises(UserError, match=match):
        load_study(tiny_study(tmp_path, evals=evals))


def test_evals_tables_take_the_settings_dataclasses_fields(tmp_path):
    from dataclasses import fields

    from unmasked.eval.common import EvalOptions
    from unmasked.eval.knn import KnnSettings

    study = load_study(tiny_study(tmp_path, evals="knn = { k = [5, 20], temperature = 0.1, batch-size = 8 }"))
    assert study.evals["knn"] == ["--k", "5", "20", "--temperature", "0.1", "--batch-size", "8"]
    names = {f.name for f in fields(KnnSettings)} | {f.name for f in fields(EvalOptions)}
    for name in names:  # every field is a key the table may hold (values of the field's own type)
        value = {"k": "[3]", "device": "'cpu'", "data": "'fashion-mnist'", "weights": "'w.pth'"}.get(name, "1")
        load_study(tiny_study(tmp_path, evals=f"knn = {{ {name} = {value} }}"))


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["study", str(tmp_path / "none.toml"), "--dry-run"]) == 2
    assert "study file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [0, 0]\n[arms.mae]\n")
    assert main(["study", str(bad)]) == 2
    assert "seeds = [0, 0]: expected a non-empty list of distinct integers" in capsys.readouterr().err


def test_dry_run_lists_runs_budgets_and_estimate(capsys):
    assert main(["study", str(STUDIES / "fm-cpu.toml"), "--dry-run", "--out", "/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert "15 runs = 5 arm(s) x 1 grid point(s) x 3 seed(s)" in out
    assert "lut-w0_seed2" in out and "119,808" in out and "estimated time left:" in out


def test_the_study_reads_the_file_its_evaluation_options_write():
    """A cheaper probe (another recipe) writes its own file; the study must look for that one."""
    from unmasked.study.runner import result_file

    assert result_file("linear", []) == "linear.json" and result_file("knn", []) == "knn.json"
    assert result_file("linear", ["--epochs", "30", "--warmup-epochs", "3"]) == "linear-epochs30-warmupepochs3.json"
    assert result_file("knn", ["--k", "1", "5"]) == "knn-k1-5.json"
    assert result_file("analyze", []) == "analysis/analysis.json"


def test_grid_values_that_round_alike_get_their_own_folders(tmp_path):
    study = load_study(tiny_study(tmp_path, arms='[arms.mae]\n[grid]\nmask_ratio = [0.75, 0.7500001]\n',
                                  seeds="[0]"))
    assert [r.name for r in study.runs] == ["mae_mask-ratio0.75_seed0", "mae_mask-ratio0.7500001_seed0"]
    assert len({r.dir for r in study.runs}) == 2
    assert run_name("lut", {"lr": 1e-05, "x": 100.0}, 0) == "lut_lr1e-05_x100_seed0"  # unchanged where exact


def test_grid_values_that_type_alike_are_refused_before_anything_runs(tmp_path):
    """1 and 1.0 are distinct in TOML but one --lut-weight once parsed: one run, not two."""
    with pytest.raises(UserError, match=r"are the same run once typed \(lut_lut-weight1_seed0\)"):
        load_study(tiny_study(tmp_path, arms='[arms.lut]\n[grid]\nlut_weight = [1, 1.0]\n', seeds="[0]"))


@pytest.mark.parametrize("extra,seeds,match", [
    ("mask_ratio = nan", "[0]", r"run mae_seed0: --mask-ratio nan: must be in the open interval \(0, 1\)"),
    ("", "[-1]", r"seeds = \[-1\]: expected a non-empty list of distinct integers in \[0, "),
    ("", "[99999999999999999999]", r"seeds = \[99999999999999999999\]: expected"),
])
def test_values_that_would_fail_hours_later_are_refused_by_the_dry_run(tmp_path, capsys, extra, seeds, match):
    path = tiny_study(tmp_path, extra=extra, seeds=seeds, arms='[arms.mae]\n')
    with pytest.raises(UserError, match=match):
        load_study(path)
    assert main(["study", str(path), "--dry-run"]) == 2
    assert "unmasked: error: study file" in capsys.readouterr().err


MATCHED = '[arms.mae]\nepochs = 6\n[arms.lut]\nmatch_compute = "mae"\nwarmup_epochs = 0.1\n'


def test_match_compute_sets_the_epochs_nearest_equal_training_flops(tmp_path, capsys):
    study = load_study(tiny_study(tmp_path, arms=MATCHED, seeds="[0, 1]"))
    (m,) = study.matches
    assert (m.arm, m.reference, m.ref_epochs) == ("lut", "mae", 6)
    assert m.flops_per_image > m.ref_flops_per_image  # two views and a teacher cost more than MAE's visible quarter
    lut = [r for r in study.runs if r.arm == "lut"]
    assert len(lut) == 2 and all(r.options["epochs"] == m.epochs for r in lut)
    assert all("--epochs" in r.argv and r.argv[r.argv.index("--epochs") + 1] == str(m.epochs) for r in lut)
    flops = {e: e * m.images_per_epoch * m.flops_per_image for e in range(1, 20)}
    assert m.epochs == min(flops, key=lambda e: abs(flops[e] - m.ref_flops))  # the nearest whole number
    assert m.ratio == pytest.approx(flops[m.epochs] / m.ref_flops)
    assert main(["study", str(tmp_path / "tiny.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"lut: epochs {m.epochs} from match_compute = 'mae': mae trains 6 epoch(s)" in out
    assert f"{m.ratio:.2f}x mae's training FLOPs" in out


@pytest.mark.parametrize("arms,match", [
    ('[arms.mae]\n[arms.lut]\nmatch_compute = "mae"\nepochs = 2\n',
     r"\[arms.lut\] match_compute = 'mae': the arm also sets epochs = 2; keep one"),
    ('[arms.mae]\n[arms.lut]\nmatch-compute = "mea"\n',
     r"match_compute = 'mea': expected the name of another arm \(mae\)"),
    ('[arms.mae]\nmatch_compute = "mae"\n', r"match_compute = 'mae': expected the name of another arm \(none\)"),
    ('[arms.mae]\nmatch_compute = "lut"\n[arms.lut]\nmatch_compute = "mae"\n',
     r"arm lut sets its epochs by match_compute too"),
    ('[arms.mae]\nsteps = 5\n[arms.lut]\nmatch_compute = "mae"\n', r"steps is set, which stops training"),
    ('[arms.mae]\n[arms.lut]\nmatch_compute = "mae"\n[grid]\nepochs = [1, 2]\n', r"\[grid\] sets epochs too"),
])
def test_match_compute_refuses_what_it_cannot_honour(tmp_path, arms, match):
    with pytest.raises(UserError, match=match):
        load_study(tiny_study(tmp_path, arms=arms))


def test_the_committed_cpu_studys_dinov2_epoch_is_its_compute_match_to_lut(tmp_path):
    """fm-cpu.toml says so in its DINOv2 arm's comment; its runs exist, so the arm keeps epochs = 1."""
    text = (STUDIES / "fm-cpu.toml").read_text()
    dinov2 = text.index("[arms.dinov2]")
    assert text[dinov2:].index("\nepochs = 1\n") < text[dinov2:].index("[arms.", 1)
    matched = tmp_path / "fm-cpu.toml"
    matched.write_text(text[:dinov2] + text[dinov2:].replace("\nepochs = 1\n", '\nmatch_compute = "lut"\n', 1))
    (m,) = load_study(matched).matches
    assert (m.arm, m.reference, m.epochs) == ("dinov2", "lut", 1) and round(m.ratio, 2) == 1.13
