from unmasked.analysis.differences import config_differences
from unmasked.analysis.report import differences_blocks
from unmasked.config import PretrainConfig, resolve_defaults
from unmasked.document import to_markdown


def _cfg(**kw):
    return resolve_defaults(PretrainConfig.flat(**kw), fashion=False).to_dict()


def test_only_settings_beside_the_objective_are_listed():
    mae, lut = _cfg(objective="mae", data="imgs"), _cfg(objective="lut", data="imgs")
    diffs = dict(config_differences([mae, lut]))
    assert diffs["crop"] == ["rrc", "pad"]  # the objectives' default crops differ on image folders
    assert diffs["lr rule"] == ["linear", "sqrt"]  # and so do their authors' lr rules
    assert "objective" not in diffs and "epochs" not in diffs and "seed" not in diffs
    same = dict(config_differences([_cfg(objective="mae", data="imgs", crop="pad"),
                                    _cfg(objective="lut", data="imgs", crop="pad", lr_scaling="linear")]))
    assert same == {}
    lr = dict(config_differences([_cfg(objective="lut", data="imgs", lr_scaling="linear"),
                                  _cfg(objective="lut", data="imgs", seed=1)]))
    assert lr["lr rule"] == ["linear", "sqrt"] and lr["seed"] == [0, 1] and len(set(lr["peak lr"])) == 2


def test_report_warns_when_more_than_the_objective_differs():
    entries = [{"label": "MAE (a)", "config": _cfg(objective="mae", data="imgs")},
               {"label": "LUT (b)", "config": _cfg(objective="lut", data="imgs", epochs=50)}]
    md = to_markdown(differences_blocks(entries))
    assert "**Warning:**" in md and "| crop | rrc | pad |" in md and "| epochs | 100 | 50 |" in md
    entries[1]["config"] = _cfg(objective="lut", data="imgs", crop="rrc", lr_scaling="linear")
    assert "Warning" not in to_markdown(differences_blocks(entries))


def test_settings_an_objective_does_not_use_are_not_compared():
    """DINOv2 has its own multi-crop and no mask ratio: a LUT and a DINOv2 run differ in the objective's
    own settings (weight decay, clipping), not in a crop or mask ratio that one of them never used."""
    from unmasked.analysis.differences import NOT_USED, config_differences
    from unmasked.config import PretrainConfig, resolve_defaults

    lut = resolve_defaults(PretrainConfig.flat(objective="lut", data="fashion-mnist"), True).to_dict()
    dino = resolve_defaults(PretrainConfig.flat(objective="dinov2", data="fashion-mnist"), True).to_dict()
    diffs = dict(config_differences([lut, dino]))
    assert diffs["crop"] == ["pad", NOT_USED] and diffs["mask ratio"] == [0.75, NOT_USED]
    assert diffs["weight decay"] == [0.05, (0.04, 0.4)] and diffs["gradient clip"] == [None, 3.0]
