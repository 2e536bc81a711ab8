"""Every option of every subcommand, given NaN, inf, -1 and 0: exit 2 naming it, or a documented meaning.

The walk reads the argparse parser itself, so options added later are covered; an option without
a rule (on its field, or in unmasked.option_rules.CLI_RULES) fails here until it gets one.
"""

import argparse
import contextlib
import io

import pytest

from unmasked.cli import build_parser, main
from unmasked.config import PretrainConfig, resolve_defaults, validate
from unmasked.errors import UserError
from unmasked.option_rules import CLI_RULES, check_values, command_of, rules

PROBES = ("nan", "inf", "-1", "0")


def _commands(parser, prefix=()):
    """(command words, its parser) for every leaf subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*prefix, name))


def _options(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _minimal_argv(words, parser, skip):
    """The command with its required arguments filled in (the probed one left out)."""
    argv = list(words)
    for a in _options(parser):
        if a is skip:
            continue
        if not a.option_strings:
            argv.append("RUN")
        elif a.required:
            argv += [a.option_strings[0], "somewhere"]
    return argv


COMMANDS = list(_commands(build_parser()))


def test_every_subcommand_and_every_option_has_a_rule():
    assert {" ".join(w) for w, _ in COMMANDS} == set(CLI_RULES)
    missing = [f"{' '.join(w)} {a.option_strings[0] if a.option_strings else a.dest}"
               for w, p in COMMANDS for a in _options(p) if a.dest not in rules(" ".join(w))]
    assert not missing, f"options without a validation rule (opt(rule=...) on the field, or CLI_RULES): {missing}"


def _numeric(parser):
    return [a for a in _options(parser) if a.option_strings and a.type in (int, float) and not a.choices]


@pytest.mark.parametrize("words,parser", COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_nan_inf_negative_and_zero_exit_2_naming_the_option_or_have_a_documented_meaning(words, parser):
    parser_ = build_parser()
    command = " ".join(words)
    for action in _numeric(parser):
        flag, rule = action.option_strings[0], rules(command)[action.dest]
        for value in PROBES:
            argv = _minimal_argv(words, parser, action) + [flag, value]
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    args = parser_.parse_args(argv)
            except SystemExit as e:  # argparse: an int option given nan or inf
                assert e.code == 2 and flag in err.getvalue(), (argv, err.getvalue())
                continue
            try:
                check_values(command_of(args), args)
            except UserError as e:
                assert str(e).startswith(f"{flag} {float(value) if action.type is float else value}"), str(e)
                assert value in ("nan", "inf", "-1") or not rule.accepts(0), (argv, str(e))
                continue
            assert value == "0" and rule.at_zero, f"{command} {flag} {value} is accepted without a documented meaning"


@pytest.mark.parametrize("name,value,message", [
    ("temperature", "nan", "--temperature nan: must be a finite number above 0"),
    ("k", "0", "--k 0: must be a positive integer"),
])
def test_eval_refuses_before_any_work(tmp_path, capsys, monkeypatch, name, value, message):
    import unmasked.eval.knn as knn

    monkeypatch.setattr(knn, "run_knn", lambda *a, **k: pytest.fail("evaluation started"))
    assert main(["eval", "knn", str(tmp_path), f"--{name}", value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("field,value,message", [
    ("base_lr", float("nan"), "--base-lr nan: must be a finite number above 0"),
    ("warmup_epochs", float("inf"), "--warmup-epochs inf: must be a finite number >= 0"),
    ("drop_path", -0.1, "--drop-path -0.1: must be in [0, 1)"),
    ("min_lr", 1.0, "--min-lr 1.0: must not exceed the peak learning rate 0.0006"),  # LUT: 1.5e-4 x sqrt(256) / 4
    ("max_image_pixels", 0, "--max-image-pixels 0: must be a positive integer"),
])
def test_pretrain_config_validation_applies_the_same_rules(field, value, message):
    cfg = resolve_defaults(PretrainConfig.flat(**{field: value}), fashion=True)
    with pytest.raises(UserError) as e:
        validate(cfg)
    assert str(e.value).startswith(message)


def test_finetune_refuses_a_negative_layer_decay(tmp_path, capsys):
    assert main(["eval", "finetune", str(tmp_path), "--layer-decay", "-0.5"]) == 2
    assert "--layer-decay -0.5: must be in (0, 1]" in capsys.readouterr().err
