"""Which stored result `compare` may show under its headers: only the default protocol's.

Results record their protocol (eval/knn.py, eval/linear.py). Files written before they did are
judged by what they do record: a kNN result counts when it has k = 20 at T = 0.07 on the run's
own data; a linear result without the record does not count and is recomputed.
"""

from __future__ import annotations

from pathlib import Path

from unmasked.data.dataset import is_fashion_mnist
from unmasked.eval.knn import TEMPERATURE


def _same_data(result: dict, config: dict) -> bool:
    a, b = str(result.get("data")), str(config.get("data"))
    if is_fashion_mnist(a) or is_fashion_mnist(b):
        return is_fashion_mnist(a) and is_fashion_mnist(b)
    return Path(a).resolve() == Path(b).resolve()


def is_default_protocol(result: dict, config: dict) -> bool:
    if "default_protocol" in result:
        return bool(result["default_protocol"])
    if result.get("protocol") == "knn":
        return 20 in result.get("ks", []) and result.get("temperature") == TEMPERATURE and _same_data(result, config)
    return False


def protocol_text(result: dict) -> str:
    """One line for a note: what a result file was computed with."""
    if result.get("protocol") == "knn":
        return (f"k {', '.join(map(str, result.get('ks', [])))}, T {result.get('temperature')}, "
                f"data {result.get('data')}")
    recipe = result.get("recipe", {})
    return ", ".join(f"{k} {recipe[k]}" for k in ("optimizer", "epochs", "base_lr") if k in recipe) + \
        f", data {result.get('data')}"
