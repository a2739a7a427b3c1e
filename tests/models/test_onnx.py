"""ONNX export (boneage export --format onnx) and onnxruntime inference (--runtime onnx, an .onnx --model): the same
bone ages as PyTorch, the config inside the file, clear errors for what cannot be exported or read."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import export_tiny_model

from boneage.cli import main
from boneage.data import hand_phantom
from boneage.errors import InvalidInputError, ModelLoadError
from boneage.inference import Predictor
from boneage.models import combine_models, create_model, load_model
from boneage.models.onnx_model import OnnxModel, export_onnx, model_onnx_bytes

NAN = float("nan")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEAGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sex_ensemble(tmp_path_factory):
    """Two tiny members with sex heads, combined: member months, SD and sex probabilities to compare."""
    root = tmp_path_factory.mktemp("onnx_members")
    members = [export_tiny_model(root / f"m{k}", f"m{k}", "global_resnet18", width=0.25, head="ordinal", sex_head=True,
                                 max_pool=False) for k in (0, 1)]
    loaded = [load_model(m) for m in members]
    with torch.no_grad():  # different members: perturb the second one's weights
        for p in loaded[1].model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model, config = combine_models(loaded)
    from boneage.models import export_model

    return export_model(root / "ensemble", model, config)


def _same(torch_model, onnx_model, x, male):
    with torch.no_grad():
        expected, got = torch_model(x, male), onnx_model(x, male)
    torch.testing.assert_close(got.bone_age_months, expected.bone_age_months.float(), atol=1e-3, rtol=1e-4)
    return expected, got


def test_an_ensemble_with_sex_heads_gives_what_pytorch_gives(sex_ensemble):
    loaded = load_model(sex_ensemble)
    onnx_model = OnnxModel(model_onnx_bytes(loaded.model, loaded.config), loaded.config)
    assert onnx_model.capabilities.ensemble and onnx_model.capabilities.predicts_sex
    x = torch.rand(5, 1, 64, 64)
    for male in (torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), torch.tensor([NAN, 0.0, NAN, 1.0, NAN])):  # known, unknown
        expected, got = _same(loaded.model, onnx_model, x, male)
        torch.testing.assert_close(got.member_months, expected.member_months.float(), atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(got.sex_probability, expected.sex_probability.float(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got.member_months[:, 0], got.member_months[:, 1])  # two members, not one twice
    one = onnx_model(x[:1], torch.tensor([1.0]))  # any batch size
    assert one.bone_age_months.shape == (1,)


def test_the_residual_attention_network_exports(tmp_path):
    folder = export_tiny_model(tmp_path / "att", "att", "residual_attention", width=0.25)
    loaded = load_model(folder)
    onnx_model = OnnxModel(model_onnx_bytes(loaded.model, loaded.config), loaded.config)
    _same(loaded.model, onnx_model, torch.rand(3, 1, 64, 64), torch.tensor([1.0, 0.0, 1.0]))


def test_models_that_cannot_be_exported_say_so(tmp_path):
    model = create_model("localize_regress", width=0.25)
    with pytest.raises(InvalidInputError, match="cannot be exported to ONNX"):
        model_onnx_bytes(model, {"preprocess": {"image_size": [64, 64]}}, name="localize")


def test_the_file_carries_its_config_and_loads_as_a_model(tiny_model_dir, tmp_path):
    path = export_onnx(load_model(tiny_model_dir), tmp_path / "tiny.onnx")
    loaded = load_model(path)
    assert isinstance(loaded.model, OnnxModel) and loaded.config == load_model(tiny_model_dir).config
    assert loaded.preprocess.image_size == (64, 64) and loaded.source == str(path)
    with pytest.raises(InvalidInputError, match="must end in .onnx"):
        export_onnx(load_model(tiny_model_dir), tmp_path / "tiny.bin")


def test_foreign_and_damaged_onnx_files_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(ModelLoadError, match="without a boneage config"):
        load_model(tmp_path / "foreign.onnx")
    (tmp_path / "damaged.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load_model(tmp_path / "damaged.onnx")


def test_predict_with_the_onnx_runtime_and_with_an_onnx_file(tiny_model_dir, tmp_path, capsys):
    images = []
    for k in range(3):
        png = tmp_path / f"hand{k}.png"
        Image.fromarray(hand_phantom(40 + 50 * k, "M", 64, np.random.default_rng(k))).save(png)
        images.append(str(png))
    onnx_file = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model_dir), "-o", str(onnx_file)]) == 0
    assert "wrote" in capsys.readouterr().out
    runs = {}
    for label, extra in (("torch", ["--model", str(tiny_model_dir)]), ("runtime", ["--model", str(tiny_model_dir),
                                                                                     "--runtime", "onnx"]),
                         ("file", ["--model", str(onnx_file)])):
        assert main(["predict", *images, "--sex", "F", "--no-hand-check", "--json", *extra]) == 0
        runs[label] = [item["bone_age_months"] for item in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose(runs["runtime"], runs["torch"], atol=0.05)
    np.testing.assert_allclose(runs["file"], runs["torch"], atol=0.05)
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # --runtime onnx exported once into the cache
    assert main(["predict", images[0], "--sex", "F", "--model", str(onnx_file), "--explain", str(tmp_path / "ev")]) == 2
    error = capsys.readouterr().err
    assert "--explain needs the PyTorch model" in error and "Traceback" not in error


def test_the_predictor_refuses_an_unknown_runtime(tiny_model_dir):
    with pytest.raises(InvalidInputError, match="runtime must be one of torch, onnx"):
        Predictor(tiny_model_dir, runtime="tensorrt")


def test_the_segmenter_runs_in_onnxruntime_with_the_same_probabilities(tmp_path):
    from boneage.segmentation import cached_segmenter

    segmenter = cached_segmenter("default")
    fast = segmenter.with_onnxruntime()
    assert segmenter.session is None and fast.session is not None  # the shared one is left as it was
    pixels = hand_phantom(100, "F", 300, np.random.default_rng(2))
    image = segmenter.prepare(pixels)
    np.testing.assert_allclose(fast.prepared_probabilities(image), segmenter.prepared_probabilities(image), atol=1e-4)
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))


def test_an_onnx_predictor_segments_with_onnxruntime(tiny_model_dir, tmp_path):
    predictor = Predictor(tiny_model_dir, runtime="onnx")  # the hand check runs the shipped segmenter
    step = next(step for step in predictor.pipeline.steps if type(step).__name__ == "HandCleanup")
    assert step.segmenter.session is not None


def test_the_segmenter_exports_with_its_config(tmp_path, capsys):
    import onnx

    from boneage.runtime import session
    from boneage.segmentation import cached_segmenter

    out = tmp_path / "segmenter.onnx"
    assert main(["export", "--segmenter", "-o", str(out)]) == 0
    assert "hand segmenter" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    segmenter = cached_segmenter("default")
    config = json.loads(meta["boneage_segmenter"])
    assert config["version"] == segmenter.info["version"] and config["settings"] == segmenter.settings.to_dict()
    image = segmenter.prepare(hand_phantom(80, "M", 256, np.random.default_rng(1)))
    from boneage.preprocess import to_model_input

    x = to_model_input(torch.tensor(image)[None, None], segmenter.preprocess).float()
    logits = session(out).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(logits, segmenter(x).numpy(), atol=1e-3)
