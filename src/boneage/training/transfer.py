"""Transfer learning between boneage models: start a model from another's weights, freeze parts of it.

:func:`load_matching_weights` copies every tensor of a source model (an exported model folder or a
training checkpoint, any registered architecture) whose name and shape match a tensor of the target;
a source name that matches no target name is tried as the ending of one (so a checkpoint of a part, or
a model that holds it under a prefix, still loads); from an ensemble into a model that is not one, the
weights of one member (``member``, default the first) are used. What was not loaded is reported, not hidden.
:func:`freeze` stops the gradients of the parameters under the given module prefixes, and
:func:`frozen_modules_eval` keeps the modules whose parameters are all frozen in evaluation mode (their
BatchNorm statistics stay as they were loaded).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..models import load_model

__all__ = ["LoadReport", "freeze", "frozen_modules_eval", "load_matching_weights", "stage_label_tensor"]


@dataclasses.dataclass
class LoadReport:
    source: str
    loaded: list[str]
    shape_mismatch: list[str]  # "name: source shape -> target shape"
    unused: list[str]  # source tensors matching no target name
    missing: list[str]  # target tensors left at their initial values

    def summary(self) -> str:
        parts = [f"--init {self.source}: loaded {len(self.loaded)} tensors"]
        if self.shape_mismatch:
            parts.append(f"{len(self.shape_mismatch)} with other shapes ({', '.join(self.shape_mismatch[:3])}"
                         f"{', ...' if len(self.shape_mismatch) > 3 else ''})")
        if self.unused:
            parts.append(f"{len(self.unused)} of the source unused ({', '.join(self.unused[:3])}"
                         f"{', ...' if len(self.unused) > 3 else ''})")
        parts.append(f"{len(self.missing)} of the model not in the source")
        return "; ".join(parts)


def _target_name(name: str, targets: dict) -> str | None:
    if name in targets:
        return name
    endings = [t for t in targets if t.endswith("." + name)]
    return endings[0] if len(endings) == 1 else None


def _member_state(state: dict, member: int, source: str) -> dict:
    """One ensemble member's weights, named as the member names them."""
    prefix = f"members.{member}."
    picked = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    if not picked:
        count = len({name.split(".")[1] for name in state if name.startswith("members.")})
        raise InvalidInputError(f"--init {source}: the ensemble has members 0-{count - 1}, not {member}")
    return picked


def load_matching_weights(model: nn.Module, source: str, member: int = 0) -> LoadReport:
    """Copy into ``model`` the weights of ``source`` (a model folder or checkpoint) whose names and shapes match
    (from an ensemble into a model that is not one: those of its member ``member``)."""
    state = load_model(source).model.state_dict()
    targets = model.state_dict()
    if any(name.startswith("members.") for name in state) and not any(name.startswith("members.") for name in targets):
        state = _member_state(state, member, source)
    report = LoadReport(str(source), [], [], [], [])
    updates = {}
    for name, tensor in state.items():
        target = _target_name(name, targets)
        if target is None:
            report.unused.append(name)
        elif targets[target].shape != tensor.shape:
            report.shape_mismatch.append(f"{target}: {tuple(tensor.shape)} -> {tuple(targets[target].shape)}")
        else:
            updates[target] = tensor.to(targets[target].dtype)
            report.loaded.append(target)
    if not updates:
        raise InvalidInputError(f"--init {source}: no weight of it matches the model by name and shape")
    model.load_state_dict(updates, strict=False)
    report.missing = [name for name in targets if name not in updates]
    return report


def freeze(model: nn.Module, prefixes) -> list[str]:
    """Stop the gradients of every parameter under the module prefixes (e.g. ``detector``); returns their names."""
    names = [name for name, _ in model.named_parameters()]
    frozen = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            modules = sorted({n.split(".")[0] for n in names})
            raise InvalidInputError(f"--freeze {prefix}: the model has no parameters there; its modules are {', '.join(modules)}")
        frozen += hits
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def frozen_modules_eval(model: nn.Module) -> None:
    """Put every submodule whose parameters are all frozen (and that has some) in evaluation mode."""
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def stage_label_tensor(samples, labels: dict, bones) -> torch.Tensor:
    """``(N, 13)`` stage labels of ``samples`` in ``bones`` order, -1 where a bone has none."""
    out = torch.full((len(samples), len(bones)), -1, dtype=torch.long)
    for i, sample in enumerate(samples):
        for j, bone in enumerate(bones):
            stage = labels.get(sample.id, {}).get(bone)
            if stage is not None:
                out[i, j] = stage
    return out
