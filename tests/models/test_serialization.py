import pickle

import pytest
import torch

from boneage.errors import ModelLoadError
from boneage.models import (
    create_model,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from boneage.preprocess import PreprocessConfig


def _config(model):
    return {"name": "t", "version": "1", "model": model.boneage_spec,
            "preprocess": PreprocessConfig(image_size=(32, 32)).to_dict(), "labels": {"min": 0.0, "max": 228.0}}


def _model():
    torch.manual_seed(1)
    return create_model("global_resnet18", width=0.25).eval()


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "c.pt", {"config": _config(model), "state_dict": model.state_dict(), "epoch": 3})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # must not need unsafe unpickling
    assert raw["format"] == "boneage-checkpoint" and raw["epoch"] == 3
    loaded = load_model(tmp_path / "c.pt")
    x, male = torch.randn(2, 1, 32, 32), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(loaded.model(x, male).bone_age_months, model(x, male).bone_age_months)
    assert loaded.preprocess.image_size == (32, 32)
    assert not list((tmp_path).glob(".*tmp*")), "atomic write left a temporary file"


def test_export_round_trip_fp32_exact_fp16_close(tmp_path):
    model = _model()
    x, male = torch.randn(2, 1, 32, 32), torch.tensor([1.0, 0.0])
    expected = model(x, male).bone_age_months
    export_model(tmp_path / "fp32", model, _config(model))
    torch.testing.assert_close(load_model(tmp_path / "fp32").model(x, male).bone_age_months, expected)
    export_model(tmp_path / "fp16", model, _config(model), dtype=torch.float16)
    got = load_model(tmp_path / "fp16").model(x, male).bone_age_months
    assert (got - expected).abs().max() < 1.0  # months


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_not_a_boneage_model_is_refused(tmp_path, capsys):
    (tmp_path / "text.pt").write_text("hello")
    with open(tmp_path / "pickle.pt", "wb") as fh:
        pickle.dump({"format": "boneage-checkpoint", "x": _Evil()}, fh, protocol=2)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    for name in ("text.pt", "pickle.pt", "other.pt", "missing.pt"):
        with pytest.raises(ModelLoadError) as info:
            load_model(tmp_path / name)
        assert "\n" not in str(info.value)
    assert "code ran" not in capsys.readouterr().out  # the pickle's payload never executed
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelLoadError, match="not a boneage model folder"):
        load_model(tmp_path / "folder")


def test_mismatched_weights_are_refused(tmp_path):
    model = _model()
    config = _config(model)
    config["model"] = {"name": "global_resnet34", "kwargs": {"width": 0.25}}
    save_checkpoint(tmp_path / "c.pt", {"config": config, "state_dict": model.state_dict()})
    with pytest.raises(ModelLoadError, match="do not match"):
        load_model(tmp_path / "c.pt")


def test_load_checkpoint_missing_file():
    with pytest.raises(ModelLoadError, match="not found"):
        load_checkpoint("/nonexistent/model.pt")


def test_ensemble_combines_models_and_reports_spread(tmp_path):
    from boneage.inference import predict_images
    from boneage.models import LoadedModel, combine_models

    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = create_model("global_resnet18", width=0.25).eval()
        members.append(LoadedModel(model, _config(model), f"m{seed}"))
    ensemble, config = combine_models(members)
    export_model(tmp_path / "ens", ensemble, {**config, "version": "t"})
    loaded = load_model(tmp_path / "ens")
    images = torch.rand(3, 32, 32)
    males = [1.0, 0.0, 1.0]
    each = [predict_images(m.model, images, males, m.preprocess) for m in members]
    months, sd = predict_images(loaded.model, images, males, loaded.preprocess, with_sd=True)
    torch.testing.assert_close(torch.tensor(months), torch.tensor((each[0] + each[1]) / 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(sd), torch.tensor(abs(each[0] - each[1]) / 2), atol=1e-3, rtol=0)
    other = create_model("global_resnet18", width=0.25)
    odd = LoadedModel(other, {**_config(other), "preprocess": PreprocessConfig(image_size=(48, 48)).to_dict()}, "odd")
    from boneage.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="preprocessing differs"):
        combine_models([members[0], odd])


def test_write_model_config_replaces_only_the_config(tmp_path):
    from boneage.models import write_model_config

    model = _model()
    export_model(tmp_path / "m", model, _config(model), dtype=torch.float16)
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    write_model_config(tmp_path / "m", {**_config(model), "metrics": {"validation": {"mae_months": 1.5}}})
    loaded = load_model(tmp_path / "m")
    assert loaded.config["metrics"]["validation"]["mae_months"] == 1.5
    assert loaded.config["weights_dtype"] == "float16" and loaded.config["format"] == "boneage-model"
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == weights
