from unmasked.cli import main
from unmasked.train.loop import pretrain

from ..conftest import tiny_config
from ..data.helpers import write_image


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
