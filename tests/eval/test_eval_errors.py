from unmasked.cli import main
from unmasked.train.loop import pretrain

from ..data.helpers import write_image
from ..helpers import tiny_config


def test_knn_on_unlabeled_data_says_it_needs_labels(fm_root, tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    folder = tmp_path / "unlabeled"
    for i in range(3):
        write_image(folder / f"{i}.png", seed=i)
    for protocol in ("knn", "linear"):
        code = main(["eval", protocol, str(tmp_path / "run"), "--data", str(folder), "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert "needs labels" in err and str(folder) in err


def test_streamed_features_leave_out_unreadable_files_and_keep_labels_aligned(tmp_path, capsys):
    import torch

    from unmasked.data.dataset import Split
    from unmasked.eval.features import extract_features
    from unmasked.models import build_encoder, encoder_spec

    files = [write_image(tmp_path / f"{i}.png", size=(20, 20), seed=i) for i in range(5)]
    (tmp_path / "2.png").write_bytes(b"broken")
    split = Split(files=files, labels=torch.tensor([0, 1, 2, 3, 4]))
    enc = build_encoder(encoder_spec("vit_tiny", 16, 4, 3, embed_dim=32, depth=1, num_heads=2))

    feats = extract_features(enc, split, (0.5,) * 3, (0.25,) * 3, 1.0, torch.device("cpu"), batch_size=2,
                             base=16, channels=3, progress=False)
    assert "2.png" in capsys.readouterr().err
    assert feats["index"].tolist() == [0, 1, 3, 4] and feats["cls"].shape == (4, 32)
    assert split.labels[feats["index"]].tolist() == [0, 1, 3, 4]
