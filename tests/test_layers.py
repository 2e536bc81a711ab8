"""The package's layers, read from its imports: a module imports only from its own layer or below.

Bottom to top. A name ending in ".*" is a package and everything in it; a module belongs to the
longest name that matches it, so `unmasked.train.ema` (a part the objectives use) sits below
`unmasked.train.*` (the training loop, which evaluates with kNN). A new module must be placed here.
"""

from __future__ import annotations

import pytest

from tests.import_graph import cycles, graph, imports, in_function_imports, module_files

LAYERS = [
    # generic: errors, option declarations, files, devices, locks, the report document
    ("base", ["unmasked", "unmasked.errors", "unmasked.options", "unmasked.files", "unmasked.notes",
              "unmasked.rng", "unmasked.devices", "unmasked.lock", "unmasked.provenance",
              "unmasked.document"]),
    ("models", ["unmasked.models.*"]),
    # images, labels and how an encoder sees them (the evaluation view, the features of a split)
    ("data", ["unmasked.data.*", "unmasked.paths", "unmasked.eval.view", "unmasked.eval.cache_key",
              "unmasked.eval.features"]),
    # the parts of training that objectives and evaluations share
    ("training parts", ["unmasked.train.ema", "unmasked.train.schedules", "unmasked.train.step_values",
                        "unmasked.train.optim", "unmasked.train.metrics", "unmasked.train.memory",
                        "unmasked.train.tensorboard", "unmasked.train.distributed",
                        "unmasked.train.checkpoint"]),
    ("objectives", ["unmasked.objectives.*"]),
    # a run's configuration and what is built from it
    ("config", ["unmasked.config", "unmasked.build", "unmasked.data.recipe", "unmasked.train.compiling"]),
    # encoders to measure: runs of `pretrain` and sources (public, random)
    ("encoders", ["unmasked.run_folder", "unmasked.sources", "unmasked.runs", "unmasked.export"]),
    ("eval", ["unmasked.eval.*"]),
    ("train", ["unmasked.train.*"]),
    ("bench", ["unmasked.bench"]),
    ("analysis", ["unmasked.analysis.*"]),
    # the demo: a pretraining and its kNN, and the printers it shares with the CLI
    ("demo", ["unmasked.demo", "unmasked.demo_folder", "unmasked.console"]),
    # every command's settings and the rule of each option (read by the CLI and by study files)
    ("command settings", ["unmasked.option_rules", "unmasked.study.settings"]),
    ("study", ["unmasked.study.*", "unmasked.readme_tables"]),
    # the commands (`unmasked.cli` a module or a package)
    ("app", ["unmasked.cli.*", "unmasked.__main__"]),
]

# Imports inside functions are for optional or heavy dependencies, and for the CLI's start-up.
LAZY_ALLOWED = ("matplotlib", "torch.utils.tensorboard", "torch.distributed", "tomllib", "tomli",
                "unmasked.cli")


def _matches(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        pkg = pattern[:-2]
        return module == pkg or module.startswith(pkg + ".")
    return module == pattern


def layer_of(module: str) -> int | None:
    best = None
    for i, (_, patterns) in enumerate(LAYERS):
        for p in patterns:
            if _matches(p, module) and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


def test_every_module_has_a_layer():
    missing = [m for m in module_files() if layer_of(m) is None]
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_no_module_imports_a_higher_layer():
    bad = []
    for e in imports():
        if e.in_function or e.type_only:
            continue
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is not None and dst is not None and dst > src:
            bad.append(f"{e.source}:{e.line} ({LAYERS[src][0]}) imports {e.target} ({LAYERS[dst][0]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    assert cycles(graph(imports(), in_function=False)) == []
    # with the imports inside functions: only the CLI's own start-up may still close a cycle
    left = [c for c in cycles(graph(imports(), in_function=True)) if not any(_matches("unmasked.cli.*", m) for m in c)]
    assert left == []


def test_imports_inside_functions_are_only_for_optional_dependencies():
    bad = [f"{mod}:{line} ({func}): {stmt}" for mod, line, stmt, func in in_function_imports(exclude=("unmasked.cli",))
           if not any(stmt.split()[1] == n or stmt.split()[1].startswith(n + ".") for n in LAZY_ALLOWED)]
    assert not bad, "move these to the module's top (or say why they must wait):\n" + "\n".join(bad)


@pytest.mark.parametrize("pattern,module,expected", [
    ("unmasked.cli.*", "unmasked.cli", True), ("unmasked.cli.*", "unmasked.cli.eval", True),
    ("unmasked.cli.*", "unmasked.client", False), ("unmasked", "unmasked.errors", False),
])
def test_layer_patterns(pattern, module, expected):
    assert _matches(pattern, module) is expected


def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path):
    pkg = tmp_path / "unmasked"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "analysis.py").write_text("")
    (pkg / "models" / "vit.py").write_text("from unmasked import analysis\n\ndef f():\n    import unmasked.models\n")
    edges = imports(module_files(tmp_path))
    found = {(e.source, e.target, e.in_function) for e in edges}
    assert ("unmasked.models.vit", "unmasked.analysis", False) in found
    assert ("unmasked.models.vit", "unmasked.models", True) in found
    assert layer_of("unmasked.models.vit") < layer_of("unmasked.analysis")
