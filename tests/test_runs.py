"""Reading run folders: what a damaged or foreign config.json says."""

import json

from tests.tiny_run import tiny_run
from unmasked.cli import main


def test_a_config_naming_an_unknown_objective_names_its_file(tmp_path, capsys):
    run, _ = tiny_run(tmp_path)
    cfg_path = run / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "objective": "byol"}))
    assert main(["eval", "knn", str(run / "encoder.safetensors"), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg_path}: names the objective 'byol', which this version does not register" in err
    assert "--objective" not in err and "Traceback" not in err
    assert main(["compare", str(run), "--out", str(tmp_path / "report"), "--no-compute", "--no-progress"]) == 2
    assert f"{cfg_path}: names the objective 'byol'" in capsys.readouterr().err
