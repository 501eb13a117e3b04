"""torchvision architectures, starting weights (model.weights, train.init_from), freezing, and the Python API:
in process on tiny tensors, weights the tests make and save themselves or conftest's tiny_model (no internet)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import torchvision

from handsigns import Predictor, checkpoint
from handsigns.errors import UserError
from handsigns.files import sha256_file
from handsigns.model import Net, Torchvision, build_net, head
from handsigns.params import build
from handsigns.params.recipe import ModelParams, RecipeParams
from handsigns.pretrained import start_from
from handsigns.train import backbone_and_head, fit, make_optimizer, make_scheduler

from conftest import TINY, colour_dataset, dvc, make_project, random_split, run

ARCHS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


# Trains its own models: each architecture's, twice (conftest's tiny_model is the notes' net).
# The fast loop keeps the lightest; the other two run with the slow tests.
@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=[] if a == "mobilenet_v3_small" else pytest.mark.slow) for a in ARCHS]
)
def test_each_architecture_trains_to_the_same_bytes_twice_and_its_checkpoint_rebuilds(arch, tmp_path):
    recipe = build(RecipeParams, {**TINY, "epochs": 1, "batch_size": 8, "model": {"arch": arch, "image_size": 32}})
    train, val = random_split(16, size=32), random_split(8, seed=1, size=32)
    for name in ("a.pt", "b.pt"):
        fit(recipe, ["x", "y"], train, val, best_path=tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()  # byte-identical reruns on the CPU
    model, ckpt = checkpoint.load_model(tmp_path / "a.pt")
    assert isinstance(model.net, Torchvision) and ckpt["model"]["arch"] == arch
    probs = model(val.images)
    assert probs.shape == (8, 2) and torch.allclose(probs.sum(1), torch.ones(8), atol=1e-5)


def test_heads_are_the_last_layer_sized_to_the_classes():
    assert head(Net(3)) == "fc2"
    names = {a: head(build_net(5, ModelParams(arch=a, image_size=32))) for a in ARCHS}
    assert names == {
        "resnet18": "body.fc",
        "mobilenet_v3_small": "body.classifier.3",
        "efficientnet_b0": "body.classifier.1",
    }


@pytest.mark.filterwarnings("ignore:The default weight initialization of inception_v3:FutureWarning")
def test_an_unknown_architecture_or_too_small_an_image_is_one_clear_error():
    with pytest.raises(UserError, match=r"model.arch = 'resnet19' is neither net nor a torchvision classifier"):
        build_net(2, ModelParams(arch="resnet19"))
    with pytest.raises(UserError, match=r"model.arch = inception_v3 does not take 16x16 images .*raise model.image"):
        build_net(2, ModelParams(arch="inception_v3", image_size=16))


# Starting weights: conftest's tiny_model, the TINY net (16 px, 4 channels) trained on the six SIGNS classes
# "0".."5" (its best.pt and the model.safetensors of its export), as SIGNS runs start new ones.


def saved_run(tiny_model) -> tuple[str, str]:
    """The tiny model's best.pt: (path, sha256)."""
    return str(tiny_model.best), sha256_file(tiny_model.best)


def test_init_from_maps_the_classes_by_name_and_gives_new_ones_a_fresh_head(tiny_model, capsys):
    path, digest = saved_run(tiny_model)
    source = checkpoint.load(tiny_model.best)["state_dict"]
    net = build_net(3, ModelParams(**TINY["model"]))
    fresh = net.fc2.weight.detach().clone()
    record = start_from(net, ["2", "0", "fist"], path, digest, "train.init_from", "train.init_from_sha256")
    assert record == {
        "param": "train.init_from",
        "source": path,
        "sha256": digest,
        "classes_carried": 2,
        "classes_fresh": 1,
    }
    assert torch.equal(net.conv1.weight, source["conv1.weight"])  # the backbone: as trained
    assert torch.equal(net.fc2.weight[0], source["fc2.weight"][2])  # "2" from its old row
    assert torch.equal(net.fc2.weight[1], source["fc2.weight"][0])  # "0" likewise
    assert torch.equal(net.fc2.weight[2], fresh[2])  # "fist": new, fresh
    assert "head fc2: 2 of 3 classes carried over, 1 fresh" in capsys.readouterr().out


def test_init_from_needs_its_sha256_pinned_and_matching(tiny_model):
    path, digest = saved_run(tiny_model)
    net = build_net(2, ModelParams(**TINY["model"]))
    with pytest.raises(UserError, match=f"train.init_from_sha256 is null; pin .*: train.init_from_sha256: {digest}"):
        start_from(net, ["0", "1"], path, None, "train.init_from", "train.init_from_sha256")
    with pytest.raises(UserError, match=f"sha256 mismatch for train.init_from = .*got {digest}"):
        start_from(net, ["0", "1"], path, "0" * 64, "train.init_from", "train.init_from_sha256")


def test_weights_that_do_not_fit_are_named_and_a_foreign_file_refused(tiny_model, tmp_path):
    path, digest = saved_run(tiny_model)
    wider = build_net(2, ModelParams(image_size=16, num_channels=8, dropout=0.3))
    fits = r"does not fit this model: 'conv1.weight' is \(4, 3, 3, 3\), the model's .*set model.num_channels"
    with pytest.raises(UserError, match=fits):
        start_from(wider, ["0", "1"], path, digest, "train.init_from", "train.init_from_sha256")
    junk = tmp_path / "junk.pt"
    junk.write_text("not weights")
    with pytest.raises(UserError, match=r"junk\.pt: not a weights file"):
        start_from(wider, ["0", "1"], str(junk), sha256_file(junk), "model.weights", "model.weights_sha256")
    with pytest.raises(UserError, match=r"names torchvision weights, but model\.arch is the notes' net"):
        start_from(wider, ["0", "1"], "DEFAULT", None, "model.weights", "model.weights_sha256")


def test_pretrained_torchvision_weights_from_a_file_keep_the_backbone_and_replace_the_head(tmp_path):
    """What `model.weights: DEFAULT` downloads is a plain torchvision state dict with a 1000-class head: a
    file of that form, made here."""
    imagenet = torchvision.models.resnet18(num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "resnet18.pth")
    net = build_net(4, ModelParams(arch="resnet18", image_size=32))
    record = start_from(
        net,
        list("abcd"),
        str(tmp_path / "resnet18.pth"),
        sha256_file(tmp_path / "resnet18.pth"),
        "model.weights",
        "model.weights_sha256",
    )
    assert torch.equal(net.body.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert net.body.fc.weight.shape == (4, 512) and record["classes_fresh"] == 4


def test_weights_from_a_url_are_downloaded_once_and_checked(tiny_model, tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serves an export's model.safetensors; the pin is checked after the
    download."""
    import functools
    import http.server
    import threading

    bias = checkpoint.load(tiny_model.best)["state_dict"]["fc2.bias"]
    (tmp_path / "www").mkdir()
    shutil.copy(tiny_model.safetensors, tmp_path / "www/model.safetensors")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
    digest = sha256_file(tmp_path / "www/model.safetensors")
    try:
        net = build_net(2, ModelParams(**TINY["model"]))
        with pytest.raises(UserError, match=f"sha256 mismatch for train.init_from = '{url}'"):
            start_from(net, ["0", "1"], url, "0" * 64, "train.init_from", "train.init_from_sha256")
        record = start_from(net, ["0", "1"], url, digest, "train.init_from", "train.init_from_sha256")
    finally:
        server.shutdown()
    assert record["classes_carried"] == 2 and torch.equal(net.fc2.bias, bias[:2])  # "0", "1"
    assert len(list((tmp_path / "hub/handsigns").glob("*.done"))) == 1  # cached where torch keeps weights


def test_a_run_starts_from_model_safetensors_too(tiny_model):
    bias = checkpoint.load(tiny_model.best)["state_dict"]["fc2.bias"]
    net = build_net(2, ModelParams(**TINY["model"]))
    safetensors = tiny_model.safetensors
    record = start_from(net, ["1", "0"], str(safetensors), sha256_file(safetensors), "train.init_from", "x")
    assert record["classes_carried"] == 2 and torch.equal(net.fc2.bias, bias[[1, 0]])


def test_freeze_epochs_train_only_the_head_and_backbone_lr_scale_gives_two_groups(tiny_model, tmp_path):
    path, digest = saved_run(tiny_model)
    recipe = build(
        RecipeParams,
        {
            **TINY,
            "epochs": 1,
            "train": {"min_steps": 0, "freeze_epochs": 1, "init_from": path, "init_from_sha256": digest},
        },
    )
    fit(recipe, ["0", "1"], random_split(12), random_split(6, seed=1), best_path=tmp_path / "frozen.pt")
    before, after = checkpoint.load(tiny_model.best), checkpoint.load(tmp_path / "frozen.pt")
    assert torch.equal(after["state_dict"]["conv2.weight"], before["state_dict"]["conv2.weight"])  # frozen
    carried = before["state_dict"]["fc2.weight"][:2]  # the rows of "0" and "1", where the head started
    assert not torch.equal(after["state_dict"]["fc2.weight"], carried)  # trained
    assert after["start"]["sha256"] == digest  # the checkpoint (and so the card) names its start

    scaled = build(RecipeParams, {"lr": 0.01, "train": {"backbone_lr_scale": 0.1, "weight_decay": 5e-4}})
    net = Net(2, 16, 4)
    opt = make_optimizer(scaled, net)
    backbone, top = backbone_and_head(net)
    assert [len(g["params"]) for g in opt.param_groups] == [len(backbone), len(top)] == [len(backbone), 2]
    make_scheduler(scaled, opt, total=10)
    assert [g["max_lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.01])


def test_model_weights_and_init_from_together_are_refused():
    with pytest.raises(UserError, match=r"model\.weights and train\.init_from both name starting weights"):
        build(RecipeParams, {"model": {"arch": "resnet18", "weights": "DEFAULT"}, "train": {"init_from": "x.pt"}})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_exports_an_onnx_model_onnx_runtime_agrees_with(arch, tmp_path):
    """What differs between architectures at export is their operators (hardswish, SiLU, squeeze-excitation):
    each one's ONNX graph, run by ONNX Runtime at another batch size than the exporter saw, gives PyTorch's
    probabilities. The stages around the export are the same code for every architecture (below, through DVC)."""
    from handsigns.export import save_onnx, verify

    recipe = build(RecipeParams, {**TINY, "epochs": 1, "batch_size": 8, "model": {"arch": arch, "image_size": 32}})
    train, val = random_split(16, size=32), random_split(8, seed=1, size=32)
    fit(recipe, ["x", "y"], train, val, best_path=tmp_path / "best.pt")
    model, _ = checkpoint.load_model(tmp_path / "best.pt")
    save_onnx(model, 32, tmp_path / "model.onnx")
    report = verify(model, tmp_path / "model.onnx", val.images[:5])  # the export stage's check; raises on a miss
    assert report["images"] == report["labels_equal"] == 5, report


# ------------------------------------------------------------------------------- through the real pipeline
# Each trains through the stages: a torchvision architecture; a new project starting from tiny_model's best.pt.


@pytest.mark.slow
def test_a_torchvision_architecture_through_dvc_exp_run_trains_evaluates_exports_and_predicts(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=16, size=32)
    repo = make_project(
        tmp_path / "repo",
        {"source": str(source)},
        overrides={**TINY, "epochs": 1, "model": {"image_size": 32}},
        git=True,
    )
    arch = "mobilenet_v3_small"  # the lightest; every architecture's export is checked above
    out = dvc(repo, "exp", "run", "-S", f"model.arch={arch}").stdout
    assert "export: models/model.onnx verified on" in out, out  # ONNX Runtime agrees with PyTorch
    card = json.loads((repo / "models/model.json").read_text())
    assert card["architecture"]["arch"] == arch
    image = next((repo / "data/raw/class_1").iterdir())
    cli = run([sys.executable, "-m", "handsigns.cli", "predict", "--json", str(image)], repo).stdout
    api = Predictor(repo / "models/model.onnx").predict(image)
    assert json.loads(cli)["label"] == api.label and json.loads(cli)["probability"] == round(api.probability, 6)


@pytest.mark.slow
def test_fine_tuning_a_run_onto_new_photos_through_dvc(tiny_model, tmp_path):
    """SIGNS-style: a SIGNS run's best.pt (conftest's tiny_model) starts a project on other photos of two of its
    classes and a new one; the card names the start, and DVC re-trains when the pin changes."""
    start = tmp_path / "start.pt"
    shutil.copy(tiny_model.best, start)
    photos = colour_dataset(tmp_path / "photos", classes=3, size=20, seed=1)
    for old, new in (("class_0", "0"), ("class_1", "1"), ("class_2", "fist")):
        (photos / old).rename(photos / new)
    train = {"min_steps": 0, "init_from": str(start), "init_from_sha256": sha256_file(start), "freeze_epochs": 1}
    second = make_project(tmp_path / "second", {"source": str(photos)}, overrides={**TINY, "train": train}, git=True)
    out = dvc(second, "repro").stdout
    assert "head fc2: 2 of 3 classes carried over, 1 fresh" in out and "the backbone is frozen" in out
    card = json.loads((second / "models/model.json").read_text())
    assert card["start"]["sha256"] == sha256_file(start) and card["start"]["source"] == str(start)
    assert dvc(second, "status", "train").stdout.strip().endswith("up to date.")
    params = second / "params.yaml"
    params.write_text(params.read_text().replace(sha256_file(start), "0" * 64))  # another pin: another start
    status = dvc(second, "status", "train").stdout
    assert "modified:           train" in status, status  # the train section, where the pin lives
