import torch

from unmasked.eval.finetune import build_classifier, layer_decay_groups
from unmasked.models import build_encoder, encoder_spec
from unmasked.train.loop import pretrain

from ..conftest import tiny_config


def test_classifier_loads_pretrained_encoder_with_new_head_and_fc_norm():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2))
    model = build_classifier(enc.spec.timm_kwargs(), 10, 0.1, enc.state_dict())
    assert torch.equal(model.blocks[1].mlp.fc1.weight, enc.blocks[1].mlp.fc1.weight)
    assert model.global_pool == "avg" and model.head.out_features == 10
    groups = layer_decay_groups(model, 0.05, 0.5)
    scale = {g["layer"]: g["lr_scale"] for g in groups}
    assert scale == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}  # embeddings < blocks < head
    trained = {id(p) for g in groups for p in g["params"]}
    assert id(model.fc_norm.weight) in trained  # the known pitfall: fc_norm must be trained


def test_finetune_smoke_run(fm_root, tmp_path):
    from unmasked.cli import main

    pretrain(tiny_config(tmp_path, steps=2), progress=False)
    run = tmp_path / "run"
    code = main(["eval", "finetune", str(run), "--no-progress", "--subset", "128", "--train-batch", "32",
                 "--epochs", "2", "--num-workers", "0", "--device", "cpu"])
    assert code == 0
    import json

    r = json.loads((run / "finetune.json").read_text())
    assert r["steps"] == 8 and len(r["history"]) == 2 and 0 <= r["top1"]["best"] <= 100
    assert r["recipe"]["layer_decay"] == 0.75 and r["recipe"]["mixup"] == 0.8
    assert (run / "finetuned.safetensors").is_file()
