"""onnxruntime for boneage's networks: a PyTorch module exported to ONNX once (cached by a digest of its weights),
then run by an onnxruntime session (``--runtime onnx``).

The export uses the ``torch.export`` based exporter with a dynamic batch axis: the older TorchScript exporter
gives wrong feature maps for MONAI's ResNet in this torch (tests compare every exported network with PyTorch).
The cache folder is ``$BONEAGE_CACHE/onnx`` (default ``~/.cache/boneage/onnx``); where it cannot be written, the
network is exported in memory each time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .utils import atomic_write

__all__ = ["OPSET", "cache_folder", "cached_session", "module_digest", "onnx_bytes", "session"]

OPSET = 18


def cache_folder() -> Path:
    return Path(os.environ.get("BONEAGE_CACHE") or Path.home() / ".cache" / "boneage") / "onnx"


def onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
               metadata: dict[str, str] | None = None) -> bytes:
    """``module`` (a copy in eval mode: the caller's is left as it was) as a serialised ONNX model whose inputs have a
    dynamic first (batch) axis, with ``metadata`` as its metadata properties."""
    import onnx

    wrapper = copy.deepcopy(module).eval().requires_grad_(False)
    batch = torch.export.Dim("batch", min=1, max=4096)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it lists every torchvision operator it skips
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, example, input_names=input_names, output_names=output_names,
                                        dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True,
                                        opset_version=OPSET, verbose=False, optimize=True)
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def session(source: bytes | str | Path, threads: int | None = None):
    """An onnxruntime CPU session of an ONNX file or its bytes (``threads``: intra-op threads, default torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                providers=["CPUExecutionProvider"])


def module_digest(module: nn.Module, extra: dict | None = None) -> str:
    """A digest of ``module``'s weights, ``extra`` (e.g. its config) and the torch version: the cache key."""
    digest = hashlib.sha256(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:20]


def cached_session(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
                   *, extra: dict | None = None, metadata: dict[str, str] | None = None, threads: int | None = None):
    """An onnxruntime session of ``module``: exported on first use into :func:`cache_folder`, read from there after."""
    path = cache_folder() / f"{module_digest(module, extra)}.onnx"
    if path.exists():
        return session(path, threads)
    data = onnx_bytes(module, example, input_names, output_names, metadata)
    try:
        atomic_write(path, data)
    except OSError:  # a read-only home: run the export from memory
        return session(data, threads)
    return session(path, threads)
