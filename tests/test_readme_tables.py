"""README's result tables against the committed result files, and the generator on a synthetic study."""

import json
import shutil
from pathlib import Path

import pytest

from unmasked import readme_tables
from unmasked.study.command import copy_results
from unmasked.study.report import write_report
from unmasked.study.spec import load_study

from .study.helpers import tiny_study
from .study.test_report import KNN, _fake_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _results(tmp_path) -> Path:
    study = load_study(tiny_study(tmp_path, seeds="[0, 1, 2]", evals="knn = true\nlinear = true\nanalyze = true"))
    for r in study.runs:
        _fake_run(r.dir, KNN[r.arm][r.seed], 11.0 + r.seed)
    prov = {"commit": "0123456789abcdef", "dirty": False, "torch": "2.x",
            "machine": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "gpus": []}}
    res = write_report(study, "unmasked study tiny.toml", prov)
    assert "commit 0123456789; Test CPU (2 torch threads, 2 CPUs); no GPU; torch 2.x" in \
        (study.out / "report.md").read_text()
    results = tmp_path / "results"
    copy_results(study, res, str(results))
    demo = results / "demo-lut"
    demo.mkdir()
    (demo / "demo.json").write_text(json.dumps({
        "command": "unmasked demo", "objective": "lut", "time_s": 225.4,
        "pretrain": {"epochs": 2.0, "images_seen": 119808, "precision": "fp32", "time_s": 190.0},
        "knn": {"top1": {"cls": 79.74, "mean": 78.94}, "pixels_top1": 84.59}}))
    return results


README = """# x

<!-- results:demo -->
<!-- /results:demo -->

text

<!-- results:study tiny -->
<!-- /results:study tiny -->

<!-- results:differences tiny -->
<!-- /results:differences tiny -->

<!-- results:layers tiny -->
<!-- /results:layers tiny -->
"""


def test_generated_tables_check_clean_and_hold_the_artifacts_numbers(tmp_path):
    results = _results(tmp_path)
    assert sorted(p.name for p in (results / "tiny").iterdir()) == [
        "attention_distance.png", "knn_monitor.png", "report.html", "report.md", "study.json"]
    text = readme_tables.write(README, results)
    assert readme_tables.check(text, results) == []
    assert readme_tables.write(text, results) == text  # idempotent
    assert ("| `unmasked demo` | lut, 2 epochs (119,808 images) | fp32 | 3 min 10 s | 3 min 45 s "
            "| 79.74 / 78.94 |") in text
    assert "| mae | 81.00 ± 1.00 sd | 82.00 ± 1.00 sd | 83.00 ± 1.00 sd |" in text
    assert "| raw pixels (no training) | 84.60 | 84.60 | 83.10 |" in text
    assert "| lut − mae | kNN20 CLS | +0.67 | -0.05 to +1.38 | not distinguishable |" in text
    assert "verdict (Holm over 7)" in text
    assert "| arm | layer 1 | layer 2 | layer 3 |" in text
    assert "| uniform attention (same grid) | 14.40 | 14.40 | 14.40 |" in text


def test_check_names_a_changed_number_a_wrong_column_count_and_a_missing_artifact(tmp_path):
    results = _results(tmp_path)
    text = readme_tables.write(README, results)
    changed = text.replace("81.00 ± 1.00 sd", "81.10 ± 1.00 sd", 1)
    problems = readme_tables.check(changed, results)
    assert len(problems) == 1 and "row 2 (mae)" in problems[0] and "'81.10 ± 1.00 sd'" in problems[0]
    mangled = text.replace("| 3 min 45 s |", "| 3 min 45 s | 79.35 ± 0.26 % |", 1)
    problems = readme_tables.check(mangled, results)
    assert any("has 7 cells, its header 6" in p for p in problems)
    study_json = results / "tiny" / "study.json"
    s = json.loads(study_json.read_text())
    study_json.write_text(json.dumps({**s, "attention_per_layer": None}))  # a study that ran no analysis
    assert any(p.startswith("results:layers tiny:") and "no attention distance per layer" in p
               for p in readme_tables.check(text, results))
    shutil.rmtree(results / "tiny")
    assert any("study.json: missing" in p for p in readme_tables.check(text, results))


def test_readme_tables_match_the_committed_results():
    if not RESULTS.is_dir():
        pytest.skip("no results/ folder in this checkout")
    pages = {p: p.read_text() for p in (ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "speed.md")}
    problems = readme_tables.check_pages(pages, RESULTS)
    assert problems == [], "\n".join(problems)


def test_check_pages_names_the_page_and_a_block_no_page_holds(tmp_path):
    results = _results(tmp_path)
    text = readme_tables.write(README, results)
    pages = {"README.md": text.replace("81.00 ± 1.00 sd", "81.10 ± 1.00 sd", 1), "docs/results.md": "# none\n"}
    problems = readme_tables.check_pages(pages, results)
    assert len(problems) == 1 and problems[0].startswith("README.md: results:study tiny: row 2 (mae)")
    problems = readme_tables.check_pages({"docs/results.md": "# none\n"}, results)
    assert sorted(problems) == [f"results:demo: committed in {results} but no page has such a block",
                                f"results:study tiny: committed in {results} but no page has such a block"]


def test_transcript_block_is_the_committed_text_and_check_names_an_edit(tmp_path):
    results = tmp_path / "results"
    (results / "demo-lut").mkdir(parents=True)
    (results / "demo-lut" / "transcript.txt").write_text("$ unmasked demo\n  kNN top-1 (k=20)   CLS 79.74%\n")
    readme = "# x\n\n<!-- results:transcript demo-lut -->\n<!-- /results:transcript demo-lut -->\n"
    text = readme_tables.write(readme, results)
    assert "```\n$ unmasked demo\n  kNN top-1 (k=20)   CLS 79.74%\n```\n<!-- /results" in text
    assert readme_tables.check(text, results) == []
    problems = readme_tables.check(text.replace("79.74", "80.74"), results)
    assert len(problems) == 1 and "transcript.txt" in problems[0]
