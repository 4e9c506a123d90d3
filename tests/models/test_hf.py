"""The papers' backbones through Hugging Face transformers (issue 20, item 3): built from their
configs, loaded from local folders without unpickling, finetuned, featurised and attributed here on
tiny random-weight models the tests write."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.models import build_model
from stratalab.models.build import count_params
from tests.conftest import write_civilcomments_csv, write_tiny_bert, write_waterbirds_folder

T = pytest.importorskip("transformers", reason="the hf extra (pip install 'stratalab[hf]') is not installed")
runner = CliRunner()


def tiny_resnet(folder, task_model: bool = False, seed: int = 1):
    torch.manual_seed(seed)
    cfg = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic")
    (T.ResNetForImageClassification(cfg) if task_model else T.ResNetModel(cfg)).save_pretrained(folder)
    return folder


def test_resnet50_has_the_paper_layout():
    n = count_params("resnet50", (3, 224, 224), 1000)  # on the meta device: nothing allocated
    assert n == 25_557_032  # torchvision's resnet50 with its 1000-class head
    model = build_model("resnet50", (3, 64, 64), 2)
    assert 23.4e6 < sum(p.numel() for p in model.body.parameters()) < 23.6e6
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 2) and model.features(x).shape == (2, 2048)
    assert model.feature_map(x).shape == (2, 2048, 2, 2)  # the unpooled map of LaBonte et al.'s reference


def test_resnet18_and_width_and_shape_checks():
    assert 11.1e6 < count_params("resnet18", (3, 32, 32), 10) < 11.2e6
    with pytest.raises(ValueError, match="width must be 1"):
        build_model("resnet50", (3, 32, 32), 2, width=2)
    with pytest.raises(ValueError, match="needs RGB images"):
        build_model("resnet18", (1, 32, 32), 2)
    with pytest.raises(ValueError, match="--pretrained.*Hugging Face backbones"):
        build_model("mlp", (4,), 2, pretrained="somewhere")


@pytest.mark.parametrize("task_model", [False, True])
def test_a_local_folder_loads_the_body_weights_and_a_fresh_head(tmp_path, task_model):
    folder = tiny_resnet(tmp_path / "r", task_model=task_model)
    a = build_model(str(folder), (3, 32, 32), 3, seed=0)
    b = build_model(str(folder), (3, 32, 32), 3, seed=0)
    saved = T.AutoModel.from_pretrained(str(folder), local_files_only=True)
    for k, v in saved.state_dict().items():
        assert torch.equal(a.body.state_dict()[k], v), k
    assert torch.equal(a.head.weight, b.head.weight)  # the head is seeded


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    folder = tiny_resnet(tmp_path / "r")
    with pytest.raises(ValueError, match="holds another layout than resnet50 .depths"):
        build_model("resnet50", (3, 32, 32), 2, pretrained=str(folder))
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("convolution.weight")))
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="do not fit its config.json .missing"):
        build_model(str(folder), (3, 32, 32), 2)


def test_a_pickled_weight_file_is_refused_unread(tmp_path):
    folder = tiny_resnet(tmp_path / "r")
    (folder / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only loading refuses"):
        build_model(str(folder), (3, 32, 32), 2)


def test_absent_weights_say_which_folder_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="no weights for 'microsoft/resnet-50' on this machine.*--pretrained PATH"):
        build_model("resnet50", (3, 32, 32), 2, pretrained="hub")
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--model", "resnet50", "--pretrained", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no weights for" in res.output and "Traceback" not in res.output


def test_vit_takes_its_input_size_from_the_data(tmp_path):
    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=8)
    T.ViTModel(cfg).save_pretrained(tmp_path / "vit")
    m = build_model(str(tmp_path / "vit"), (3, 32, 32), 2)
    x = torch.rand(2, 3, 32, 32)
    assert m(x).shape == (2, 2) and m.feature_map(x).shape == (2, 17, 16)  # 16 patches + [CLS]


def test_tokenize_once_and_reuse_the_cache(tmp_path):
    from stratalab.models.hf import tokenize_texts

    tok = write_tiny_bert(tmp_path / "bert")
    texts = np.array(["you are awful", "nice people"], dtype=object)
    a = tokenize_texts(texts, str(tok), max_length=8, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and a.shape == (2, 2, 8) and a.dtype == np.int32
    assert a[0, 0, 0] == 2 and a[0, 1].sum() == 5  # [CLS] first; 3 words + [CLS] + [SEP] unmasked
    b = tokenize_texts(texts, str(tok), max_length=8, cache_dir=tmp_path / "cache")
    assert isinstance(b, np.memmap) and np.array_equal(a, b)
    tokenize_texts(texts, str(tok), max_length=10, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # keyed by max_length (and tokenizer, texts)


def test_resnet50_finetunes_from_a_local_folder_on_waterbirds_jpegs(tmp_path):
    """Must show: ResNet-50 from a local random-weight 'pretrained' folder finetunes 1 epoch on a
    synthetic Waterbirds-format folder of 64 JPEGs, from the CLI, with 2 loader workers."""
    torch.manual_seed(0)
    T.ResNetModel(T.ResNetConfig()).save_pretrained(tmp_path / "resnet-50")
    data = write_waterbirds_folder(tmp_path / "wb", n=64)
    out = tmp_path / "run.json"
    res = runner.invoke(app, ["train", "--dataset", "waterbirds", "-d", str(data), "--option", "image_size=32",
                              "--model", "resnet50", "--pretrained", str(tmp_path / "resnet-50"), "--epochs", "1",
                              "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.001", "--workers", "2",
                              "--select", "val_wga", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["config"]["model"] == "resnet50" and d["config"]["pretrained"] == str((tmp_path / "resnet-50").resolve())
    assert d["config"]["workers"] == 2 and len(d["history"]) == 1
    assert 0 <= d["metrics"]["test"]["worst_group_accuracy"] <= 1


def test_tiny_bert_finetunes_on_civilcomments_and_last_layer_freezes_the_body(tmp_path):
    bert = write_tiny_bert(tmp_path / "bert")
    data = write_civilcomments_csv(tmp_path / "cc")
    out = tmp_path / "run.json"
    args = ["train", "--dataset", "civilcomments", "-d", str(data), "--model", str(bert),
            "--epochs", "10", "--batch-size", "8", "--lr", "0.003", "--max-length", "12", "--select", "val_avg", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["metrics"]["test"]["average_accuracy"] > 0.9  # the toxic words are learnt
    assert list((data / ".stratalab-cache").glob("tokens-*.npy"))  # tokenised once, beside the data

    from stratalab.data import load
    from stratalab.train import TrainConfig, run

    ds = load("civilcomments", data_dir=data)
    cfg = TrainConfig(model=str(bert), finetune="last_layer", epochs=1, batch_size=8,
                      max_length=12, select="val_avg")
    before = T.AutoModel.from_pretrained(str(bert), local_files_only=True).state_dict()
    r = run(ds, cfg)
    after = r.model.body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k in after)
    with pytest.raises(ValueError, match="has text inputs; train a text encoder"):
        run(ds, TrainConfig(model="mlp", epochs=1))


def test_george_runs_on_embed_features_of_a_waterbirds_folder(tmp_path):
    folder = tiny_resnet(tmp_path / "r")
    data = write_waterbirds_folder(tmp_path / "wb", n=64)
    feats = tmp_path / "wb.npz"
    res = runner.invoke(app, ["embed", "--dataset", "waterbirds", "-d", str(data), "--option", "image_size=32",
                              "--model", str(folder), "--workers", "2", "-o", str(feats)])
    assert res.exit_code == 0, res.output
    arr = np.load(feats)
    assert arr["train"].shape == (32, 16) and arr["test"].shape == (16, 16) and arr["g_train"].shape == (32,)
    unpooled = tmp_path / "map.npz"
    res = runner.invoke(app, ["embed", "--dataset", "waterbirds", "-d", str(data), "--option", "image_size=32",
                              "--model", str(folder), "--unpooled", "-o", str(unpooled)])
    assert res.exit_code == 0 and np.load(unpooled)["train"].shape == (32, 16, 1, 1), res.output
    res = runner.invoke(app, ["run", "george", "--dataset", "waterbirds", "-d", str(data), "--option", "image_size=32",
                              "--features", str(feats), "--seeds", "0", "--epochs", "2", "--reducer", "pca",
                              "--min-cluster-size", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert "GEORGE" in json.dumps(json.loads(res.output))


def test_trak_attributes_through_a_backbones_head(tmp_path):
    from stratalab.attribution.trak import TRAK

    model = build_model(str(tiny_resnet(tmp_path / "r")), (3, 16, 16), 2).eval()
    x = torch.rand(6, 3, 16, 16).numpy()
    y = np.array([0, 1, 0, 1, 0, 1])
    trak = TRAK(model, proj_dim=8, params=lambda n: n.startswith("head"), batch_size=3).featurize(x, y)
    assert trak.grads == "hooks" and trak.score(x[:2], y[:2]).shape == (6, 2)
