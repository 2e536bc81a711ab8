"""The report document: one list of blocks, the same content in Markdown and in self-contained HTML."""

import base64

import pytest

from unmasked import document as doc


def test_blocks_render_to_markdown_and_html_with_the_figure_inlined(tmp_path):
    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "f.png").write_bytes(png)
    blocks = [doc.Heading("Report", 1), doc.Paragraph("Run `unmasked x` <now>, **warning**"),
              doc.Table([["a", "b|c"], ["1", "2"]]), doc.Bullets(["one", "two"]), doc.Figure("Plot", "f.png")]
    md = doc.to_markdown(blocks)
    assert md.splitlines()[:2] == ["# Report", ""]
    assert "| a | b\\|c |\n|---|---|\n| 1 | 2 |" in md and "- one\n- two" in md and "![Plot](f.png)" in md
    html = doc.to_html(blocks, "t", tmp_path)
    assert "<p>Run <code>unmasked x</code> &lt;now&gt;, <strong>warning</strong></p>" in html
    assert "<th>b|c</th>" in html and "<li>two</li>" in html
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
    assert doc.write(blocks, tmp_path, "t") == ["report.md", "report.html"]
    assert (tmp_path / "report.md").read_text() == md


def test_a_table_with_rows_of_different_lengths_is_refused():
    with pytest.raises(ValueError, match="different lengths"):
        doc.Table([["a", "b"], ["1"]])
