"""Write README.md's result tables from the committed files in this folder, or check them.

    python results/make_readme_tables.py           # rewrite every marked block of README.md
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; list every difference")
    p.add_argument("--readme", default=str(HERE.parent / "README.md"), help="default: the repository's README.md")
    p.add_argument("--results", default=str(HERE), help="default: this folder")
    args = p.parse_args(argv)
    readme, results = Path(args.readme), Path(args.results)
    text = readme.read_text()
    if args.check:
        problems = readme_tables.check(text, results)
        missing = [b for b in readme_tables.artifacts(results) if f"<!-- {b} -->" not in text]
        problems += [f"{b}: committed in {results} but README.md has no such block" for b in missing]
        for line in problems:
            print(line)
        return 1 if problems else 0
    try:
        new = readme_tables.write(text, results)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    readme.write_text(new)
    n = len(readme_tables.MARKER.findall(new))
    print(f"{readme}: {n} block(s) written from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
