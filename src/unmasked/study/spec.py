"""A study file (TOML) -> the list of runs it asks for, each with its `unmasked pretrain` options.

    name = "fm-cpu"                 # optional; out defaults to runs/studies/<file name>
    seeds = [0, 1, 2]
    pairs = [["lut", "mae"]]        # optional: differences lut - mae (default: every later - earlier arm)
    [recipe]                        # any `unmasked pretrain` option (snake or kebab case)
    epochs = 2
    [arms.mae]                      # one objective each (its own, its name's, or the recipe's), plus overrides
    objective = "mae"
    [arms.lut-w0]
    objective = "lut"
    lut_weight = 0.0
    [arms.dinov2]
    match_compute = "mae"           # epochs set so that its training FLOPs equal mae's (--dry-run says how)
    [arms.random]                   # no pretraining: a source measured as it is (random init, a
    encoder = "random:vit_tiny/4"   # timm:NAME with weights = "FILE", hf-hub:, local-dir:), seeded
    [grid]                          # optional ablations: every combination, for every arm
    mask_ratio = [0.5, 0.75, 0.9]
    [evals]                         # true, false or a table of the command's options
    knn = true
    linear = { epochs = 10 }
    analyze = true
    finetune = false

Options are checked by parsers generated from the same option fields and settings dataclasses as
the command line's (unmasked.option_rules), so whatever `unmasked pretrain` accepts (a new
objective included) is accepted here, and nothing else; an [evals] table takes the settings of its
command (`KnnSettings`, `LinearRecipe`, `FinetuneOptions`, `AnalyzeSettings`, and `EvalOptions`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unmasked.errors import UserError
from unmasked.option_rules import (
    add_pretrain_options,
    check_values,
    settings_fields,
    settings_parser,
)
from unmasked.options import MAX_SEED, check_rules, field_rules
from unmasked.sources import PREFIXES, is_source
from unmasked.study.matching import match_epochs

TOP_KEYS = {"name", "out", "seeds", "pairs", "recipe", "arms", "grid", "evals"}
MANAGED = {"out": "the study names each run folder", "seed": "use the study's seeds = [...]",
           "resume": "the study resumes half-finished runs itself", "help": "not an option",
           "no_progress": "pass --no-progress to `unmasked study`", "knn": "use [evals] knn = true"}
EVALS = {"knn": "eval knn", "linear": "eval linear", "analyze": "analyze", "finetune": "eval finetune"}
MATCH_KEY = "match_compute"  # in an arm: its epochs set so that its training FLOPs equal the named arm's
EVAL_MANAGED = {"run", "help", "no_progress", "out"}
DEFAULT_EVALS = {"knn": {}, "linear": {}, "analyze": {}}
DEFAULT_KNN_EVERY = 0.5  # studies watch the features improve; pretrain alone leaves the monitor off
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


@dataclass
class Run:
    name: str
    arm: str
    point: dict  # grid values of this run ({} without a grid)
    seed: int
    options: dict  # pretrain options (snake case, typed as the parser types them), without out
    argv: list[str]  # the same options as command-line arguments
    dir: Path


@dataclass
class Study:
    path: Path
    name: str
    out: Path
    seeds: list[int]
    recipe: dict
    arms: dict[str, dict]
    grid: dict[str, list]
    evals: dict[str, list[str]]  # protocol -> extra command-line arguments
    pairs: list[tuple[str, str]]  # (b, a): report b - a
    runs: list[Run] = field(default_factory=list)
    matches: list = field(default_factory=list)  # study.matching.Match: epochs set by match_compute

    @property
    def points(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*self.grid.values())] or [{}]


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if not path.is_file():
        raise UserError(f"study file {path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"study file {path}: not valid TOML: {e}") from None


def pretrain_parser() -> argparse.ArgumentParser:
    """`unmasked pretrain`'s options (those a study may set), as the command line types them."""
    parser = argparse.ArgumentParser(prog="unmasked pretrain", add_help=False)
    add_pretrain_options(parser)
    return parser


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def to_argv(options: dict, actions: dict[str, argparse.Action]) -> list[str]:
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) and isinstance(actions[key], argparse.BooleanOptionalAction):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, bool):  # store_true flags
            if value:
                argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def parse_with(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    """Let the command's own parser judge the values; its complaint becomes a UserError."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        msg = err.getvalue().strip().splitlines()
        raise UserError(f"{where}: {msg[-1].split('error: ', 1)[-1] if msg else 'invalid options'}") from None


def normalise_keys(table: dict, actions: dict, where: str, managed: dict | set) -> dict:
    out = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in managed:
            why = managed[name] if isinstance(managed, dict) else "set by the study"
            raise UserError(f"{where}: {key} cannot be set here ({why})")
        if name not in actions and len(actions) > 20:  # pretrain's: too many to list
            raise UserError(f"{where}: unknown option {key!r}; expected an option of that command, e.g. "
                            f"{', '.join(sorted(actions)[:6])}, ... (see its --help)")
        if name not in actions:
            raise UserError(f"{where}: unknown option {key!r}; expected one of {', '.join(actions)}")
        out[name] = value
    return out


def run_name(arm: str, point: dict, seed: int) -> str:
    def fmt(v):
        if isinstance(v, bool):
            return "on" if v else "off"
        if isinstance(v, float):  # short where that is exact (0.75, 1e-05), else every digit (0.7500001)
            return f"{v:g}" if float(f"{v:g}") == v else repr(v)
        return str(v)

    return arm + "".join(f"_{k.replace('_', '-')}{fmt(v)}" for k, v in point.items()) + f"_seed{seed}"


ENCODER_ARM_KEYS = {"encoder", "weights", "img_size"}


def _encoder_arm(table: dict, where: str) -> dict:
    """An arm measured without pretraining: encoder = a source (see unmasked/sources.py)."""
    opts = {k.replace("-", "_"): v for k, v in table.items()}
    extra = sorted(set(opts) - ENCODER_ARM_KEYS)
    if extra:
        raise UserError(f"{where}: {', '.join(extra)}: an arm with encoder = ... is not pretrained; it takes only "
                        f"{', '.join(sorted(ENCODER_ARM_KEYS))}")
    if not is_source(opts["encoder"]):
        raise UserError(f"{where}: encoder = {opts['encoder']!r}: expected a source starting with "
                        f"{', '.join(PREFIXES)}")
    if opts.get("weights") is not None:
        opts["weights"] = str(Path(opts["weights"]).expanduser())
    return opts


def eval_argv(proto: str, table: dict, where: str) -> list[str]:
    """An [evals] table checked against its command's settings dataclasses (names, types, rules)
    -> the command-line arguments the study passes to that evaluation."""
    command = EVALS[proto]
    parser = settings_parser(command)
    actions = option_actions(parser)
    argv = to_argv(normalise_keys(table, actions, where, EVAL_MANAGED), actions)
    ns = parse_with(parser, argv, where)
    try:  # NaN, 0 neighbours, ...: refused now, not when the evaluation starts
        check_rules(field_rules(settings_fields(command)), ns)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return argv


def is_encoder_run(run: Run) -> bool:
    return "encoder" in run.options


def load_study(path: str | Path, out: str | None = None) -> Study:
    path = Path(path)
    raw = read_toml(path)
    where = f"study file {path}"
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(TOP_KEYS))}")
    parser = pretrain_parser()
    actions = option_actions(parser)
    seeds = _seeds(raw, where)
    recipe = _recipe(raw, actions, where)
    arms, matches = _arms(raw, actions, where, recipe.pop("objective", None))
    grid = normalise_keys(raw.get("grid", {}), actions, f"{where}: [grid]", MANAGED)
    _check_matches(arms, matches, recipe, grid, where)
    _check_grid(grid, arms, where)
    evals = _evals(raw, where)
    pairs = _pairs(raw, arms, where)
    study = Study(path, raw.get("name", path.stem), _study_out(raw, path, out, where), seeds, recipe, arms, grid,
                  evals, pairs)
    _add_runs(study, matches, functools.partial(_typed_run, study, parser, actions, where))
    _refuse_shared_folders(study, where)
    return study


def _seeds(raw: dict, where: str) -> list[int]:
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                      and 0 <= s <= MAX_SEED for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise UserError(f"{where}: seeds = {seeds!r}: expected a non-empty list of distinct integers in "
                        f"[0, {MAX_SEED}], e.g. [0, 1, 2]")
    return seeds


def _recipe(raw: dict, actions: dict, where: str) -> dict:
    """The options every pretrained run shares, with the study's own defaults."""
    recipe = normalise_keys(raw.get("recipe", {}), actions, f"{where}: [recipe]", MANAGED)
    recipe.setdefault("knn_every", DEFAULT_KNN_EVERY)
    # one TensorBoard log per run, so `tensorboard --logdir <study>` shows every arm, when the optional
    # extra is installed (`tensorboard = false` in the recipe turns it off)
    recipe.setdefault("tensorboard", importlib.util.find_spec("tensorboard") is not None)
    return recipe


def _arms(raw: dict, actions: dict, where: str, shared_objective: str | None = None
          ) -> tuple[dict[str, dict], dict[str, object]]:
    """({arm: its options}, {arm: the arm its match_compute names}). An arm's objective is its own
    `objective`, else its name where that names an objective, else the recipe's `objective`."""
    objectives = tuple(actions["objective"].choices or ())
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise UserError(f"{where}: no arms; add at least one [arms.NAME] table with objective = one of "
                        f"{', '.join(objectives)}")
    arms, matches = {}, {}
    for arm, table in arms_raw.items():
        if not NAME.match(arm):
            raise UserError(f"{where}: arm name {arm!r}: use letters, digits, '-' and '.' (it names run folders)")
        if isinstance(table, dict) and "encoder" in table:
            arms[arm] = _encoder_arm(table, f"{where}: [arms.{arm}]")
            continue
        if not isinstance(table, dict):
            raise UserError(f"{where}: arms.{arm} = {table!r}: expected a table ([arms.{arm}] with objective = ...)")
        table = dict(table)
        for key in (MATCH_KEY, MATCH_KEY.replace("_", "-")):
            if key in table:
                matches[arm] = table.pop(key)
        opts = normalise_keys(table, actions, f"{where}: [arms.{arm}]", MANAGED)
        opts.setdefault("objective", arm if arm in objectives else shared_objective)
        if opts["objective"] not in objectives:
            given = (f"objective = {opts['objective']!r}" if opts["objective"] is not None else
                     "has no objective (set objective = ... in the arm or in [recipe])")
            raise UserError(f"{where}: [arms.{arm}] {given}: expected one of {', '.join(objectives)}")
        arms[arm] = opts
    return arms, matches


def _check_grid(grid: dict, arms: dict, where: str) -> None:
    """Each [grid] option a non-empty list of distinct values, set nowhere else, for pretrained arms."""
    encoder_arms = [a for a, o in arms.items() if "encoder" in o]
    if grid and encoder_arms:
        raise UserError(f"{where}: [grid] varies pretraining options, but [arms.{encoder_arms[0]}] is not "
                        "pretrained (encoder = ...); put the grid's values in arms of their own")
    for key, values in grid.items():
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise UserError(f"{where}: [grid] {key} = {values!r}: expected a non-empty list of distinct values")
        for arm, opts in arms.items():
            if key in opts:
                raise UserError(f"{where}: [grid] {key} is also set by [arms.{arm}]; set it in one place")


def _evals(raw: dict, where: str) -> dict[str, list[str]]:
    """{protocol: the arguments the study passes to its command} for the evaluations asked for."""
    evals = {}
    for proto, value in raw.get("evals", DEFAULT_EVALS).items():
        if proto not in EVALS:
            raise UserError(f"{where}: [evals] {proto}: unknown evaluation; expected {', '.join(EVALS)}")
        if value is False:
            continue
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise UserError(f"{where}: [evals] {proto} = {value!r}: expected true, false or a table of options")
        evals[proto] = eval_argv(proto, value, f"{where}: [evals] {proto}")
    return evals


def _pairs(raw: dict, arms: dict, where: str) -> list[tuple[str, str]]:
    """The differences the report gives, (b, a) for b - a: every later arm minus every earlier one
    unless `pairs` names them."""
    names = list(arms)
    if raw.get("pairs") is None:
        return [(b, a) for i, a in enumerate(names) for b in names[i + 1:]]
    pairs = []
    for p in raw["pairs"]:
        if not (isinstance(p, list) and len(p) == 2 and all(x in arms for x in p) and p[0] != p[1]):
            raise UserError(f"{where}: pairs entry {p!r}: expected [B, A] with two different arm names "
                            f"({', '.join(names)}); the report gives B - A")
        pairs.append((p[0], p[1]))
    return pairs


def _study_out(raw: dict, path: Path, out: str | None, where: str) -> Path:
    study_out = Path(out or raw.get("out") or Path("runs") / "studies" / path.stem)
    if study_out.exists() and not study_out.is_dir():
        raise UserError(f"{where}: out {study_out} is a file, expected a folder for the study's runs and report")
    return study_out


def _typed_run(study: Study, parser: argparse.ArgumentParser, actions: dict, where: str, arm: str,
               arm_opts: dict, point: dict, seed: int) -> Run:
    """One pretraining run, its options typed and checked as `unmasked pretrain` would."""
    options = {**study.recipe, **arm_opts, **point, "seed": seed}
    rname = run_name(arm, point, seed)
    argv = to_argv(options, actions)
    ns = parse_with(parser, argv, f"{where}: run {rname}")
    try:  # NaN, a negative seed, ...: refused now, not hours later when the run starts
        check_values("pretrain", ns)
    except UserError as e:
        raise UserError(f"{where}: run {rname}: {e}") from None
    typed = {k: getattr(ns, k) for k in options}
    return Run(rname, arm, point, seed, typed, argv, study.out / rname)


def _add_runs(study: Study, matches: dict, typed_run: Callable[..., Run]) -> None:
    """Every arm x grid point x seed; an arm with encoder = ... one results folder per seed, on the
    recipe's data; an arm with match_compute its epochs set per grid point."""
    for arm, arm_opts in study.arms.items():
        if "encoder" in arm_opts:
            for seed in study.seeds:
                options = {**arm_opts, "data": study.recipe.get("data", "fashion-mnist"), "seed": seed}
                rname = run_name(arm, {}, seed)
                study.runs.append(Run(rname, arm, {}, seed, options, [], study.out / rname))
            continue
        for point in study.points:
            if arm in matches:
                arm_opts = {**study.arms[arm], "epochs": _matched_epochs(study, arm, matches[arm], point, typed_run)}
            for seed in study.seeds:
                study.runs.append(typed_run(arm, arm_opts, point, seed))


def _check_matches(arms: dict, matches: dict, recipe: dict, grid: dict, where: str) -> None:
    """match_compute = "REF": REF is another pretrained arm with its own epochs, and the arm types
    no epochs of its own (they would contradict each other)."""
    for arm, ref in matches.items():
        here = f"{where}: [arms.{arm}] {MATCH_KEY} = {ref!r}"
        if "epochs" in arms[arm]:
            raise UserError(f"{here}: the arm also sets epochs = {arms[arm]['epochs']}; keep one (match_compute "
                            "sets the epochs so that its training FLOPs equal the other arm's)")
        if not isinstance(ref, str) or ref not in arms or ref == arm:
            others = [a for a in arms if a != arm]
            raise UserError(f"{here}: expected the name of another arm ({', '.join(others) or 'none'})")
        if "encoder" in arms[ref] or ref in matches:
            what = "is not pretrained" if "encoder" in arms[ref] else "sets its epochs by match_compute too"
            raise UserError(f"{here}: arm {ref} {what}; match an arm that trains for epochs it sets itself")
        if "epochs" in grid:
            raise UserError(f"{here}: [grid] sets epochs too; keep one")
        if any("steps" in t for t in (recipe, grid, arms[arm], arms[ref])):
            raise UserError(f"{here}: steps is set, which stops training whatever the epochs; remove steps or "
                            "set the epochs by hand")


def _matched_epochs(study: Study, arm: str, ref: str, point: dict, typed_run) -> int:
    seed = study.seeds[0]
    m = match_epochs(arm, ref, point, typed_run(arm, study.arms[arm], point, seed),
                     typed_run(ref, study.arms[ref], point, seed), f"study file {study.path}: [arms.{arm}]")
    study.matches.append(m)
    return m.epochs


def _refuse_shared_folders(study: Study, where: str) -> None:
    """Two runs in one folder would report one run under two settings."""
    seen: dict[str, Run] = {}
    for run in study.runs:
        other = seen.setdefault(run.name, run)
        if other is run:
            continue
        if other.options == run.options:
            raise UserError(f"{where}: runs {other.point} and {run.point} of arm {run.arm} are the same run "
                            f"once typed ({run.name}); make the [grid] values distinct")
        raise UserError(f"{where}: two runs would share the folder {run.dir} ({other.arm} {other.point} and "
                        f"{run.arm} {run.point}); rename the arm or change the [grid] values")
