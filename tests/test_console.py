"""The printers the CLI and the demo share: what a user reads after a run."""

from unmasked.console import print_monitor, print_summary

SUMMARY = {"completed": True, "objective": "mae", "model": "vit/7", "data": "fashion-mnist", "train_images": 60000,
           "device": "cpu (2 threads)", "precision": "fp32", "world_size": 1, "images_seen": 119808, "epochs": 2.0,
           "steps": 468, "time_s": 200.0, "images_per_s": 599.0, "run_dir": "runs/demo"}


def _knn(cls, mean, pixels=84.59):
    return {"headline_k": 20, "top1": {"cls": cls, "mean": mean}, "test_images": 10000, "test_split": "test",
            "pixels": {"top1": pixels}}


def test_the_summary_says_whether_the_encoder_beats_the_pixels(capsys):
    print_summary(SUMMARY, _knn(83.0, 85.0))
    out = capsys.readouterr().out
    assert "vs pixels" in out and "CLS -1.59, mean-pooled +0.41 points (the encoder beats raw pixels)" in out
    print_summary(SUMMARY, _knn(80.0, 79.5))
    assert "CLS -4.59, mean-pooled -5.09 points (raw pixels still win)" in capsys.readouterr().out


def _record(epoch, cls, mean, pixels=82.0):
    return {"epoch": epoch, "knn20_cls": cls, "knn20_mean": mean, "knn20_pixels": pixels}


def test_the_monitor_names_the_epoch_it_crossed_the_pixels(capsys):
    print_monitor([_record(0.5, 70.0, 71.0), _record(1.0, 81.0, 83.0), _record(1.5, 84.0, 82.5)], "x/knn_monitor.png")
    out = capsys.readouterr().out
    assert "crossed at epoch 1" in out and "82.0% on the same images" in out and "x/knn_monitor.png" in out
    assert "  CLS         70.0%   81.0%   84.0%" in out


def test_the_monitor_says_how_far_below_the_pixels_it_ends(capsys):
    print_monitor([_record(0.5, 70.0, 71.0), _record(1.0, 78.0, 79.5)])
    assert "the encoder ends 2.5 points below" in capsys.readouterr().out


def test_a_run_without_monitor_records_prints_nothing(capsys):
    print_monitor([])
    assert capsys.readouterr().out == ""
