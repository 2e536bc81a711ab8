"""Notes for the user: one clean line on stderr; output that survives an ASCII-only terminal."""

import io
import subprocess
import sys
import warnings

from unmasked import notes


def test_a_note_and_a_warning_are_one_line_without_a_source_prefix(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a Python warning
        notes.note("small images: ViT-Tiny, patch 4")
        notes.warn("skipped unreadable image a.png")
    assert capsys.readouterr().err == ("unmasked: note: small images: ViT-Tiny, patch 4\n"
                                       "unmasked: warning: skipped unreadable image a.png\n")


def test_an_ascii_only_stdout_escapes_what_it_cannot_encode(monkeypatch):
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    notes.tolerate_any_encoding()
    print("run folder  runs/été")
    stream.flush()
    assert raw.getvalue() == b"run folder  runs/\\xe9t\\xe9\n"


def test_the_cli_prints_a_non_ascii_path_under_pythonioencoding_ascii(tmp_path):
    r = subprocess.run([sys.executable, "-m", "unmasked", "eval", "knn", str(tmp_path / "été")],
                       capture_output=True, env={**__import__("os").environ, "PYTHONIOENCODING": "ascii"})
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert b"\\xe9t\\xe9" in r.stderr and len(r.stderr.strip().splitlines()) == 1
