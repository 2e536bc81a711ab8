import json

from unmasked.analysis.compute import COMPUTE_FILE, training_compute
from unmasked.config import PretrainConfig, resolve_defaults


def _run(tmp_path, objective, **kw):
    run = tmp_path / objective
    run.mkdir()
    cfg = resolve_defaults(PretrainConfig.flat(objective=objective, width=32, depth=2, heads=2, decoder_width=32,
                                          decoder_depth=1, decoder_heads=2, proj_hidden=64, **kw), fashion=True)
    cfg.in_chans, cfg.mean, cfg.std = 1, [0.3], [0.3]
    cfg.save(run / "config.json")
    (run / "summary.json").write_text(json.dumps({"images_seen": 1000, "time_s": 12.5}))
    return run


def test_training_compute_counts_a_step_and_caches_it(tmp_path):
    mae, lut = _run(tmp_path, "mae"), _run(tmp_path, "lut")
    m, lu = training_compute(mae), training_compute(lut)
    assert set(m) == {"flops_per_image", "images_seen", "train_flops", "time_s"}
    assert m["images_seen"] == 1000 and m["time_s"] == 12.5 and m["train_flops"] == m["flops_per_image"] * 1000
    assert m["flops_per_image"] > 0
    assert 1.5 < lu["flops_per_image"] / m["flops_per_image"] < 6  # two views, a teacher and two heads
    cached = json.loads((mae / COMPUTE_FILE).read_text())
    assert cached["flops_per_image"] == m["flops_per_image"]
    cached["flops_per_image"] = 123.0  # the cache is what a second call reads
    (mae / COMPUTE_FILE).write_text(json.dumps(cached))
    assert training_compute(mae)["flops_per_image"] == 123.0


def test_a_changed_config_is_counted_again(tmp_path):
    run = _run(tmp_path, "mae")
    first = training_compute(run)["flops_per_image"]
    cfg = json.loads((run / "config.json").read_text())
    cfg["mask_ratio"] = 0.5  # the encoder sees twice the tokens
    (run / "config.json").write_text(json.dumps(cfg))
    assert training_compute(run)["flops_per_image"] > first
