"""Write the result tables of README.md, docs/results.md and docs/speed.md from the committed files in this
folder, or check them.

    python results/make_readme_tables.py           # rewrite every marked block of the pages
    python results/make_readme_tables.py --check   # exit 1, naming each cell, if any differs

The blocks and their markers are described in src/unmasked/readme_tables.py. The files come from
`unmasked study FILE --report-only --results-dir results` (results/<study>/study.json) and
`unmasked demo --objective NAME --transcript results/demo-NAME` (results/demo-NAME/demo.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unmasked import readme_tables

HERE = Path(__file__).resolve().parent


PAGES = (HERE.parent / "README.md", HERE.parent / "docs" / "results.md", HERE.parent / "docs" / "speed.md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; list every difference")
    p.add_argument("--page", action="append", default=None, metavar="FILE",
                   help="a page with result blocks (repeatable; default: README.md, docs/results.md and docs/speed.md)")
    p.add_argument("--results", default=str(HERE), help="default: this folder")
    args = p.parse_args(argv)
    pages, results = [Path(f) for f in args.page] if args.page else list(PAGES), Path(args.results)
    if args.check:
        problems = readme_tables.check_pages({page: page.read_text() for page in pages}, results)
        for line in problems:
            print(line)
        return 1 if problems else 0
    for page in pages:
        try:
            new = readme_tables.write(page.read_text(), results)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {page}: {e}", file=sys.stderr)
            return 2
        page.write_text(new)
        print(f"{page}: {len(readme_tables.MARKER.findall(new))} block(s) written from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
