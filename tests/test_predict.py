"""Image preprocessing against timm's evaluation transform, the packaged ImageNet class list,
and the ``minicond predict`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minicond.preprocess import (
    ImageError,
    PreprocessConfig,
    imagenet_classes,
    open_image,
    preprocess,
)

Image = pytest.importorskip("PIL.Image")


def _write_images(directory) -> dict[str, object]:
    """Small generated images of each kind the command must read: RGB PNG and JPEG of odd,
    non-square sizes, a greyscale PNG, a PNG with an alpha channel and a palette GIF."""
    rng = np.random.default_rng(0)
    paths = {}
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    paths["rgb_png"] = directory / "wide.png"
    Image.fromarray(rgb).save(paths["rgb_png"])
    paths["jpeg"] = directory / "tall.jpg"
    Image.fromarray(rng.integers(0, 256, (61, 29, 3), dtype=np.uint8)).save(paths["jpeg"],
                                                                          quality=90)
    paths["grey"] = directory / "grey.png"
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L").save(
        paths["grey"])
    paths["alpha"] = directory / "alpha.png"
    Image.fromarray(rng.integers(0, 256, (33, 45, 4), dtype=np.uint8), mode="RGBA").save(
        paths["alpha"])
    paths["palette"] = directory / "palette.gif"
    Image.fromarray(rgb).convert("P").save(paths["palette"])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("name", ["tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b1_8e",
                                  "efficientnet_b0"])
def test_preprocess_equals_timm_eval_transform(name, images):
    pytest.importorskip("torchvision")
    timm_data = pytest.importorskip("timm.data")
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name).to_dict()
    transform = timm_data.create_transform(
        **timm_data.resolve_data_config(pretrained_cfg=cfg), is_training=False)
    config = PreprocessConfig.from_pretrained_cfg(cfg)
    for kind, path in images.items():
        image = open_image(path)
        expected = transform(image.convert("RGB")).numpy()
        got = preprocess(image, config)
        assert got.dtype == np.float32 and got.shape == expected.shape, kind
        # Same resampling, same rounding, same float32 arithmetic: equal to the last bit.
        np.testing.assert_array_equal(got, expected, err_msg=kind)


def test_grey_and_alpha_become_rgb(images):
    config = PreprocessConfig((3, 8, 8), crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    grey = preprocess(open_image(images["grey"]), config)
    assert grey.shape == (3, 8, 8)
    np.testing.assert_array_equal(grey[0], grey[1])
    np.testing.assert_array_equal(grey[0], grey[2])
    alpha = preprocess(open_image(images["alpha"]), config)
    dropped = preprocess(open_image(images["alpha"]).convert("RGB"), config)
    np.testing.assert_array_equal(alpha, dropped)


def test_preprocess_config_errors():
    with pytest.raises(ValueError, match="input_size"):
        PreprocessConfig.from_pretrained_cfg({"input_size": (3, 224)})
    with pytest.raises(ValueError, match="crop_pct"):
        PreprocessConfig.from_pretrained_cfg({"input_size": (3, 8, 8), "crop_pct": 1.5})
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig.from_pretrained_cfg({"input_size": (3, 8, 8),
                                              "interpolation": "cubic"})


def test_open_image_errors(tmp_path):
    with pytest.raises(ImageError, match="missing.png"):
        open_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(ImageError, match="notes.png"):
        open_image(text)


def test_imagenet_classes_match_timm():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == ("n01440764", "tench, Tinca tinca")
    timm_data = pytest.importorskip("timm.data")
    info = timm_data.ImageNetInfo()
    assert [s for s, _ in classes] == [info.index_to_label_name(i) for i in range(1000)]
    assert [n for _, n in classes] == [info.index_to_description(i) for i in range(1000)]


# --- minicond predict ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    """A tiny CondConv run of one epoch: its best.ckpt."""
    from minicond.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="condconv", experts=3, width=4, epochs=1, batch_size=32,
                      train_size=64, test_size=16, image_size=12, backend="numpy", out=str(out),
                      plots=False, progress=False))
    return out / "best.ckpt"


def _predict(capsys, *argv):
    from minicond.cli import main

    status = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_checkpoint_text_and_json(capsys, images, toy_checkpoint):
    from minicond.data import SHAPE_CLASSES

    paths = [images[k] for k in ("rgb_png", "jpeg", "grey", "alpha", "palette")]
    status, out, err = _predict(capsys, "--checkpoint", toy_checkpoint, "--topk", 3,
                                "--backend", "numpy", *paths)
    assert status == 0, err
    assert "random weights" not in err
    for p in paths:
        assert str(p) in out
    assert out.count("routing weights per CondConv block") == len(paths)

    status, out, err = _predict(capsys, "--checkpoint", toy_checkpoint, "--topk", 3,
                                "--backend", "numpy", "--json", *paths)
    assert status == 0, err
    report = json.loads(out)
    assert report["weights"] == str(toy_checkpoint) and not report["random_weights"]
    assert [r["path"] for r in report["images"]] == [str(p) for p in paths]
    for r in report["images"]:
        probabilities = [t["probability"] for t in r["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(t["name"] == SHAPE_CLASSES[t["index"]] for t in r["top"])
        assert 0.0 < sum(probabilities) <= 1.0 + 1e-9
        # Three CondConv blocks, each with 3 sigmoid routing weights in (0, 1).
        assert len(r["routing"]) == 3
        assert all(len(w) == 3 and all(0 < v < 1 for v in w) for w in r["routing"].values())


def test_predict_checkpoint_matches_the_model(capsys, images, toy_checkpoint):
    """The reported probabilities are the softmax of the trained model's logits on the image
    as the toy dataset stores images (grey, resized, in [0, 1])."""
    import minicond as mc
    from minicond.checkpoint import load_checkpoint
    from minicond.models import build_model
    from minicond.preprocess import preprocess_grey

    state = load_checkpoint(toy_checkpoint)
    model = build_model("condconv", (1, 12, 12), 6, experts=3, width=4, backend="numpy")
    model.load_state_dict(state["model"])
    model.eval()
    x = preprocess_grey(open_image(images["jpeg"]), 12)[None]
    with mc.no_grad():
        logits = model(mc.tensor(x, backend="numpy")).numpy().astype(np.float64)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    status, out, _ = _predict(capsys, "--checkpoint", toy_checkpoint, "--topk", 6, "--json",
                              "--backend", "numpy", images["jpeg"])
    assert status == 0
    top = json.loads(out)["images"][0]["top"]
    assert [t["index"] for t in top] == list(np.argsort(-p, kind="stable"))
    np.testing.assert_allclose([t["probability"] for t in top], np.sort(p)[::-1], rtol=1e-6)


def test_predict_bad_files(capsys, tmp_path, images, toy_checkpoint):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.jpg"
    for bad in (text, missing):
        status, out, err = _predict(capsys, "--checkpoint", toy_checkpoint, "--backend",
                                    "numpy", images["rgb_png"], bad)
        assert status == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and bad.name in err
    status, out, err = _predict(capsys, "--checkpoint", text, "--backend", "numpy",
                                images["rgb_png"])
    assert status == 2 and len(err.strip().splitlines()) == 1 and "notes.png" in err


IMAGENET_MODEL = "tf_efficientnet_cc_b0_4e"


def test_predict_imagenet_weights_file(capsys, tmp_path, images):
    """With a safetensors file, the report is the model's own softmax and routing weights
    on the image prepared as its pretrained_cfg says (at a small --image-size)."""
    import minicond as mc
    from minicond.interop import save_safetensors
    from minicond.models import create_model

    mc.manual_seed(0)
    model = create_model(IMAGENET_MODEL, backend="numpy")
    weights = tmp_path / "model.safetensors"
    save_safetensors(model, weights)
    model.eval()
    cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    x = np.stack([preprocess(open_image(images[k]), PreprocessConfig.from_pretrained_cfg(cfg))
                  for k in ("grey", "alpha")])
    with mc.no_grad():
        logits = model(mc.tensor(x, backend="numpy")).numpy().astype(np.float64)
    blocks = {name: m.last_routing_weights.numpy() for name, m in model.named_modules()
              if m.__dict__.get("last_routing_weights") is not None}
    assert len(blocks) > 0

    status, out, err = _predict(capsys, "--model", IMAGENET_MODEL, "--weights", weights,
                                "--image-size", 32, "--backend", "numpy", "--json",
                                images["grey"], images["alpha"])
    assert status == 0, err
    assert "random weights" not in err
    report = json.loads(out)
    assert not report["random_weights"]
    classes = imagenet_classes()
    for b, entry in enumerate(report["images"]):
        p = np.exp(logits[b] - logits[b].max())
        p /= p.sum()
        top = entry["top"]
        assert [t["index"] for t in top] == list(np.argsort(-p, kind="stable")[:5])
        np.testing.assert_allclose([t["probability"] for t in top],
                                   np.sort(p)[::-1][:5], rtol=1e-5)
        assert all((t["synset"], t["name"]) == classes[t["index"]] for t in top)
        assert set(entry["routing"]) == set(blocks)
        for name, r in entry["routing"].items():
            np.testing.assert_allclose(r, blocks[name][b], rtol=1e-6)


def test_predict_imagenet_random_weights_says_so(capsys, images):
    status, out, err = _predict(capsys, "--model", IMAGENET_MODEL, "--image-size", 32,
                                "--backend", "numpy", "--topk", 2, images["rgb_png"])
    assert status == 0
    assert "random weights" in err
    assert str(images["rgb_png"]) in out and "routing weights" in out


def test_predict_refuses_weights_of_another_model(capsys, tmp_path, images):
    from minicond.interop import save_safetensors
    from minicond.models import create_model

    other = tmp_path / "toy.safetensors"
    save_safetensors(create_model("toy_condconv", backend="numpy"), other)
    status, out, err = _predict(capsys, "--model", IMAGENET_MODEL, "--weights", other,
                                "--backend", "numpy", images["rgb_png"])
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "toy.safetensors" in err
    status, _, err = _predict(capsys, "--model", "no_such_model", images["rgb_png"])
    assert status == 2 and "no_such_model" in err


def test_forward_with_routing_reads_a_layers_own_router():
    """A CondConv2d with its own router (no block around it) reports under its own name,
    through a forward hook that is removed afterwards."""
    import minicond as mc
    from minicond import nn
    from minicond.predict import forward_with_routing

    mc.manual_seed(3)
    model = nn.Sequential(nn.CondConv2d(2, 3, 3, padding=1, num_experts=5, backend="numpy"),
                          nn.Flatten()).eval()
    x = mc.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), dtype="float32",
                  backend="numpy")
    logits, routing = forward_with_routing(model, x)
    assert logits.shape == (2, 48) and list(routing) == ["0"]
    with mc.no_grad():
        expected = model[0].routing(x).numpy()
    np.testing.assert_allclose(routing["0"], expected, rtol=1e-6)
    assert not model[0].routing._forward_hooks


def test_predict_checkpoint_refuses_model_options(capsys, images, toy_checkpoint):
    status, out, err = _predict(capsys, "--checkpoint", toy_checkpoint, "--image-size", 32,
                                images["rgb_png"])
    assert status == 2 and out == "" and "--image-size" in err
