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
    print_monitor([_record(0.5, 70.0, 71.0), _record(1.0, 81.0, 83.0), _record(1.5, 84.0, 82.5)], 5000, 1000,
                  "x/knn_monitor.png")
    out = capsys.readouterr().out
    assert "crossed at epoch 1, ends 2.0 points above" in out and "82.0% on the same images" in out
    assert "x/knn_monitor.png" in out and "5,000 training images -> 1,000 held-out queries" in out
    assert "  CLS         70.0%   81.0%   84.0%" in out


def test_a_curve_that_crosses_and_falls_back_says_where_it_ends(capsys):
    print_monitor([_record(1, 83.0, 80.0), _record(2, 81.0, 80.5)], 5000, 1000)
    assert "crossed at epoch 1, ends 1.0 points below" in capsys.readouterr().out


def test_a_long_curve_prints_ten_evenly_spaced_checks_and_the_last(capsys):
    records = [_record(round((i + 1) / 3, 4), 70.0 + i / 10, 71.0) for i in range(60)]
    print_monitor(records, 5000, 1000)
    epochs = capsys.readouterr().out.splitlines()[1].split()[1:]
    assert len(epochs) == 10 and epochs[0] == "0.3333" and epochs[-1] == "20"


def test_the_monitor_says_how_far_below_the_pixels_it_ends(capsys):
    print_monitor([_record(0.5, 70.0, 71.0), _record(1.0, 78.0, 79.5)], 5000, 1000)
    assert "the encoder ends 2.5 points below" in capsys.readouterr().out


def test_a_run_without_monitor_records_prints_nothing(capsys):
    print_monitor([], 5000, 1000)
    assert capsys.readouterr().out == ""
