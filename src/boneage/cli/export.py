"""``boneage export [--model PATH | --segmenter [PATH]] --format onnx -o FILE.onnx``: a model (or the hand
segmenter's U-Net) as an ONNX file that carries its config (:func:`boneage.models.onnx_model.export_onnx`);
``predict --model FILE.onnx`` and ``evaluate`` run a model's with onnxruntime."""

from __future__ import annotations

from ._common import MODEL_HELP

NAME = "export"
HELP = "write a model as ONNX (with its preprocessing config inside) for onnxruntime"


def arguments(p) -> None:
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--segmenter", nargs="?", const="default", default=None, metavar="PATH",
                   help="export the hand segmenter's U-Net instead (default: the shipped one), its settings and "
                        "preprocessing inside")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the file format (default: onnx)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="where the model is written")
    p.add_argument("--check-images", default=None, metavar="DIR",
                   help="compare the exported model with PyTorch on the images of this folder (at most 32)")


def run(args) -> int:
    from ..models import load_model
    from ..models.onnx_model import export_onnx

    if args.segmenter:
        return _export_segmenter(args)
    loaded = load_model(args.model)
    path = export_onnx(loaded, args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {loaded.name}, inputs image "
          f"{tuple(loaded.preprocess.image_size)} and male; run it with 'boneage predict --model {path}'")
    if args.check_images:
        _check(args.model, path, args.check_images)
    return 0


def _check(model, path, folder) -> None:
    """The largest difference between PyTorch and onnxruntime on up to 32 images of ``folder``."""
    from pathlib import Path

    import numpy as np

    from ..errors import InvalidInputError
    from ..inference import Predictor

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))[:32]
    if not files:
        raise InvalidInputError(f"--check-images {folder}: no PNG, JPEG or DICOM files there")
    torch_predictor = Predictor(model, check_hand=False)
    onnx_predictor = Predictor(path, check_hand=False)
    prepared = [torch_predictor.prepare(f) for f in files]
    sexes = ["F" if i % 2 else "M" for i in range(len(files))]
    difference = np.abs(torch_predictor.predict(prepared, sexes)[0] - onnx_predictor.predict(prepared, sexes)[0]).max()
    print(f"onnxruntime vs PyTorch on {len(files)} images: largest difference {difference:.3f} months")


def _export_segmenter(args) -> int:
    from pathlib import Path

    from ..errors import InvalidInputError
    from ..segmentation import cached_segmenter
    from ..utils import atomic_write

    path = Path(args.output)
    if path.suffix != ".onnx":
        raise InvalidInputError(f"{path}: an ONNX model's file name must end in .onnx")
    segmenter = cached_segmenter(args.segmenter)
    atomic_write(path, segmenter.onnx_bytes())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): hand segmenter {segmenter.info.get('version')}, input image "
          f"{tuple(segmenter.settings.input_size)}, output logits")
    return 0
