import json
import subprocess
import sys

import pytest

from unmasked.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "unmasked", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,match", [
    (["--mask-ratio", "1.5"], "--mask-ratio 1.5: must be in the open interval (0, 1)"),
    (["--objective", "lut", "--mask-ratio", "0.4"], "--mask-ratio 0.4: LUT needs a mask ratio in [0.5, 1)"),
    (["--img-size", "30", "--patch-size", "4"], "--img-size 30 is not divisible by --patch-size 4"),
    (["--epochs", "-3"], "--epochs -3: must be a positive integer"),
    (["--batch-size", "100000"], "--batch-size 100000 is larger than the 60000 training images"),
    (["--data", "/no/such/folder"], "--data /no/such/folder: no such file or folder"),
    (["--device", "gpu"], "--device 'gpu': not a device; expected auto, cpu, cuda or cuda:N"),
    (["--compile", "--compile-mode", "reduce-overhead", "--accum-steps", "2"],
     "--compile-mode reduce-overhead: CUDA graphs (reduce-overhead, max-autotune) cannot accumulate"),
    (["--seed", "99999999999999999999"], "--seed 99999999999999999999: must be an integer in [0, 9223372036854775807]"),
])
def test_bad_arguments_exit_2_with_a_message(fm_root, tmp_path, capsys, args, match):
    code = main(["pretrain", "--no-progress", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert match in err and "Traceback" not in err
    if "--seed" in args:  # refused before the run folder (and its .lock) is made
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args", [["--objective", "dino"], ["--model", "vit_gigantic"], ["--epochs", "ten"]])
def test_argparse_rejects_unknown_choices(args):
    r = run_cli("pretrain", *args)
    assert r.returncode == 2 and "invalid" in r.stderr and "Traceback" not in r.stderr


def test_help_documents_every_option():
    r = run_cli("pretrain", "--help")
    assert r.returncode == 0
    from unmasked.config import OPTION_FIELDS

    for f in OPTION_FIELDS:
        assert "--" + f.name.replace("_", "-") in r.stdout
    assert "torchrun" in r.stdout


def test_eval_knn_on_missing_run(tmp_path, capsys):
    assert main(["eval", "knn", str(tmp_path / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_new_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(fm_root, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain", "--no-progress", "--out", str(out), "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"x")
    assert main(["pretrain", "--no-progress", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_smoke_run_and_knn_through_the_cli(fm_root, tmp_path, capsys):
    out = tmp_path / "smoke"
    args = ["pretrain", "--no-progress", "--out", str(out), "--objective", "mae", "--width", "32", "--depth", "1",
            "--heads", "2", "--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2",
            "--subset", "128", "--batch-size", "32", "--steps", "2", "--num-workers", "0"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "stopped at step 2" in text and "images seen" in text
    assert main(["eval", "knn", str(out), "--no-progress", "--k", "5", "20"]) == 0
    text = capsys.readouterr().out
    assert "kNN on fashion-mnist" in text and "k=20" in text
    assert "pixels" in text and "native 28 px image" in text  # the raw-pixel reference row and the view
    result = json.loads((out / "knn.json").read_text())
    assert result["transform"]["crop_pct"] == 1.0 and abs(result["pixels"]["top1"] - 84.6) < 0.1


@pytest.mark.parametrize("cmd", [["bench", "--steps", "1"], ["eval", "knn", "RUN"], ["analyze", "RUN"]])
def test_other_commands_refuse_a_bad_device(cmd, tmp_path, capsys):
    cmd = [str(tmp_path) if a == "RUN" else a for a in cmd]
    assert main([*cmd, "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "--device 'gpu'" in err and "Traceback" not in err


def test_eval_without_a_protocol_is_an_error():
    r = run_cli("eval")
    assert r.returncode == 2 and "PROTOCOL" in r.stderr and "Traceback" not in r.stderr


def test_subset_larger_than_the_dataset_warns(capsys):
    from unmasked.data.dataset import subset_indices

    assert subset_indices(100, 500, 0) is None
    # one clean line, not a Python warning with the source file and line under it
    assert capsys.readouterr().err == ("unmasked: warning: --subset 500 is more than the 100 training images; "
                                       "using all 100\n")


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import unmasked.bench

    monkeypatch.setattr(unmasked.bench, "bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "--json", "/nonexistent/x.json", "--device", "cpu"]) == 2
    assert "--json /nonexistent/x.json: no such folder /nonexistent" in capsys.readouterr().err
    a_file = tmp_path / "report"
    a_file.write_text("mine")
    assert main(["compare", str(tmp_path), str(tmp_path), "--out", str(a_file)]) == 2
    assert f"--out {a_file}: is a file, expected a folder" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert main(["analyze", str(run), "--out", str(a_file)]) == 2
    assert f"--out {a_file}: is a file, expected a folder" in capsys.readouterr().err
    study = tmp_path / "s.toml"
    study.write_text(f'out = "{a_file}"\n[arms.mae]\n')
    assert main(["study", str(study), "--dry-run"]) == 2
    assert f"out {a_file} is a file, expected a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_no_library_module_imports_the_command_line():
    """The CLI is a layer on top: the study, the demo and every other module get option defaults,
    result file names and printers from the settings dataclasses and unmasked.console."""
    import ast
    from pathlib import Path

    import unmasked

    root = Path(unmasked.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.parts[len(root.parts)] in ("cli", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n == "unmasked.cli" or
                          n.startswith("unmasked.cli.")]
    assert not offenders


def test_each_settings_field_is_an_option_with_the_fields_default():
    from dataclasses import fields

    from unmasked.cli import build_parser
    from unmasked.option_rules import SETTINGS

    parser = build_parser()
    for command, classes in SETTINGS.items():
        required = {"bench": [], "demo": [], "compare": ["RUN", "--out", "o"], "study": ["S.toml"],
                    "show": ["SRC", "IMG", "--out", "o"], "embed": ["SRC", "--out", "o"], "export": ["RUN", "DIR"]}
        argv = [*command.split(), *required.get(command, ["RUN"])]
        args = parser.parse_args(argv)
        for f in (f for cls in classes for f in fields(cls)):
            assert getattr(args, f.name) == f.default, (command, f.name)


def test_settings_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "knn", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "neighbour counts; k = 20 is the headline (default: 10 20 100 200)" in out
    assert "vote temperature T (default: 0.07)" in out
    assert "images per forward pass (default: 256)" in out
    with pytest.raises(SystemExit):
        main(["eval", "linear", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "sgd: momentum SGD (default);" in out and "(default: sgd)" not in out  # its own words
    assert "probe epochs (default: 90)" in out
