import pytest
import torch

from boneage.errors import InvalidInputError
from boneage.models import create_model, list_models, model_defaults


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("head", ["ordinal", "l1"])
def test_every_model_forward_backward_finite(name, head):
    torch.manual_seed(0)
    head = model_defaults(name).get("head", head)  # a family with a head of its own (rus_chn: stages) uses it
    model = create_model(name, width=0.25, head=head)
    images = torch.randn(2, 1, 64, 64)
    male = torch.tensor([0.0, 1.0])
    # models with a region proposal network (ALA-Net) train it on keypoints: one annotated image
    extra = {"keypoints": [torch.zeros(0, 2), torch.rand(17, 2) * 60]} if model.capabilities.needs_keypoints else {}
    outputs = model(images, male, **extra)
    assert outputs.bone_age_months.shape == (2,)
    assert torch.isfinite(outputs.bone_age_months).all()
    losses = model.compute_loss(outputs, {"bone_age_months": torch.tensor([50.0, 150.0]), "male": male})
    losses["loss"].backward()
    for pname, param in model.named_parameters():
        if (model.capabilities.partial_loss and not model.capabilities.per_bone
                and not pname.startswith(("backbone.", "rpn.", "lateral", "smooth"))):
            continue  # an RPN trained alone: the bone age layers are not trained
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"


def test_sex_input_changes_the_prediction():
    torch.manual_seed(0)
    model = create_model("global_resnet18", width=0.25).eval()
    images = torch.randn(1, 1, 64, 64).repeat(2, 1, 1, 1)
    out = model(images, torch.tensor([0.0, 1.0])).bone_age_months
    assert out[0] != out[1]


def test_unknown_model_lists_valid_names():
    with pytest.raises(InvalidInputError) as info:
        create_model("global_resnet81")
    message = str(info.value)
    assert "global_resnet18" in message and "Did you mean" in message and "Available models" in message


def test_bad_keyword_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="global_resnet18"):
        create_model("global_resnet18", colour=True)


def test_spec_is_remembered_for_checkpoints():
    model = create_model("global_resnet34", width=0.25, head="mse")
    assert model.boneage_spec == {"name": "global_resnet34", "kwargs": {"width": 0.25, "head": "mse"}}
