"""Reading the small JSON files beside a run (config.json, encoder.json, knn.json, ...).

A torn or hand-edited file is a one-line error naming it, never a JSONDecodeError traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from unmasked.errors import UserError


def read_json(path: Path, fix: str = "restore it, or delete it if it is a result that can be recomputed"):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({type(e).__name__}: {str(e).splitlines()[0]}); the file is torn "
                        f"or was edited; {fix}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None


def require_keys(data, keys: tuple[str, ...], path: Path) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; is it a file written by unmasked?")
    return data


RUN_CONFIG_KEYS = ("objective", "data")


def read_run_config(path: Path) -> dict:
    """A run's config.json: valid JSON and a run config (an object naming its objective and data)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run config (expected a JSON object of `unmasked pretrain` options, "
                        f"found {type(data).__name__}); restore the file `unmasked pretrain` wrote")
    missing = [k for k in RUN_CONFIG_KEYS if not isinstance(data.get(k), str)]
    if missing:
        raise UserError(f"{path}: not a run config (no {' or '.join(missing)}); restore the file "
                        "`unmasked pretrain` wrote")
    return data
