"""``boneage predict FILE... [--sex M|F] [--model PATH] [--json] [--explain OUT_DIR]``: the bone age of files
and folders through :meth:`boneage.api.Assessor.assess_files`; with ``--output CSV`` (and ``--manifest``,
``--resume``, torchrun) an archive streamed to a CSV (:func:`boneage.api.archive.predict_archive`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import _args
from ._common import EXIT_USAGE, MODEL_HELP, empty_folder_error, expand_inputs, unique_name

NAME = "predict"
HELP = "bone age of one or more radiographs (files or folders)"


def arguments(p) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="image files (PNG, JPEG, TIFF, DICOM) or folders")
    p.add_argument("--sex", type=_args.sex, help="M or F (default: read from DICOM PatientSex)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--batch-size", type=_args.positive_int, default=32)
    p.add_argument("--threads", type=_args.positive_int, default=None, help="CPU threads for inference")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the model with PyTorch, or exported to ONNX with onnxruntime (bone ages only; "
                        "exported once and cached; an .onnx --model always runs with onnxruntime)")
    p.add_argument("--no-hand-check", dest="hand_check", action="store_false",
                   help="assess images even where the segmenter finds no hand (research use)")
    p.add_argument("--output", default=None, metavar="CSV",
                   help="stream one row per image to this CSV as it goes (an archive of any size; under torchrun the "
                        "ranks share the files and rank 0 merges their rows)")
    p.add_argument("--resume", action="store_true", help="with --output: continue an interrupted run, skipping rows written")
    p.add_argument("--manifest", default=None, metavar="CSV",
                   help="the files to assess from a CSV with a 'path' column and an optional 'sex' column")
    p.add_argument("--progress", action="store_true", help="with --output: a progress bar with images/s on stderr")
    p.add_argument("--explain", type=_args.output_dir, default=None, metavar="OUT_DIR",
                   help="write each image's visual evidence as PNG here (ALA-Net: its 17 ROIs; RUS-CHN: its 13 bones "
                        "labelled with their stages; residual attention: each module's mask; ResNets: Grad-CAM)")


def _items(args) -> list[tuple[str, str | None]]:
    """The files to assess with their sexes: the manifest's rows, then the files and folders given."""
    from ..api.archive import read_manifest
    from ..errors import InvalidInputError

    items = read_manifest(args.manifest) if args.manifest else []
    items += [(file, args.sex) for file in expand_inputs(args.files)]
    if not items:
        raise InvalidInputError("no images given: name files or folders, or --manifest CSV")
    if args.sex is not None:
        items = [(file, args.sex) for file, _ in items]
    return items


def run_archive(args, assessor) -> int:
    from ..api.archive import predict_archive, shard_from_environment
    from ..errors import InvalidInputError

    if args.json or args.explain:
        raise InvalidInputError("--output writes a CSV: leave out --json and --explain")
    shard = shard_from_environment()
    summary = predict_archive(assessor, _items(args), args.output, resume=args.resume, batch_size=args.batch_size,
                              shard=shard, progress=args.progress)
    if shard.rank == 0:
        print(f"{summary.output}: {summary.assessed} assessed, {summary.rejected} rejected, {summary.skipped} already "
              f"there; {summary.images_per_second:.1f} images/s" + (f" on rank 0 of {shard.world}" if shard.world > 1 else ""))
    if summary.rejected:
        print(f"boneage predict: {summary.rejected} image(s) could not be assessed; the CSV's error column says why",
              file=sys.stderr)
    return EXIT_USAGE if summary.rejected else 0


def _check_options(args) -> None:
    from ..errors import InvalidInputError

    if (args.resume or args.progress) and not args.output:
        raise InvalidInputError("--resume and --progress go with --output CSV")
    if args.manifest and not args.output:
        raise InvalidInputError("--manifest goes with --output CSV (an archive is streamed to a CSV)")
    if not args.files and not args.manifest:
        raise InvalidInputError("no images given: name files or folders, or --manifest CSV with --output")


def run(args) -> int:
    from ..api import Assessor
    from ..errors import InvalidInputError

    _check_options(args)
    assessor = Assessor(args.model, threads=args.threads, check_hand=args.hand_check, runtime=args.runtime)
    if args.output:
        return run_archive(args, assessor)
    if args.explain and not assessor.predictor.model.capabilities.evidence:
        if assessor.predictor.runtime == "onnx":
            raise InvalidInputError("--explain needs the PyTorch model (--runtime torch and a model folder): "
                                    "an ONNX model gives bone ages only")
        raise InvalidInputError(f"model {assessor.model_info['name']} offers no visual evidence for --explain")
    results = list(assessor.assess_files(expand_inputs(args.files), sex=args.sex, batch_size=args.batch_size,
                                         explain=bool(args.explain)))
    for r in results:
        if r.status != "ok":
            r.rejection = empty_folder_error(r.source) or r.rejection
    evidence = _write_evidence(results, Path(args.explain)) if args.explain else {}
    if args.json:
        print(json.dumps([prediction_dict(r, evidence.get(i)) for i, r in enumerate(results)], indent=2))
    else:
        for i, r in enumerate(results):
            if r.status == "ok":
                print("\t".join([*prediction_line(r), *([evidence[i]] if i in evidence else [])]))
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        print(f"boneage predict: error: {r.rejection}", file=sys.stderr)
    return EXIT_USAGE if failed else 0


def prediction_line(assessment) -> list[str]:
    """The fields ``predict`` prints for an assessed image: file, sex (``F (predicted, 0.87)`` when the model
    predicted it), months, years and months; and, for a per-bone model (RUS-CHN), its total score."""
    from ..utils import format_months

    a = assessment
    sex = f"{a.sex} (predicted, {a.sex_probability:.2f})" if a.sex_source == "predicted" else a.sex
    fields = [a.source, sex, f"{a.bone_age_months:.1f} months", format_months(a.bone_age_months)]
    if a.rus_chn is not None:
        fields.append(f"RUS-CHN score {a.rus_chn['total_score']}")
    return fields


def prediction_dict(assessment, evidence_file: str | None = None) -> dict:
    """One ``predict --json`` item: file, sex, bone age (months and text), where the sex came from (``predicted``:
    by a model that predicts it, whose probability of that sex is ``sex_probability``), its
    interval (``bone_age_interval_months``: [low, high], calibrated when the model has a calibration, as
    ``bone_age_interval_calibrated`` says; None for a model that gives none), the model's SD when it has
    one, the evidence file; or the error. A per-bone model (RUS-CHN) adds ``bones`` (13 of name, box in the
    image's pixels, stage, score, stage probability, box score), ``rus_chn_score`` and ``rus_chn`` (the
    summary of :class:`~boneage.clinical.Assessment`)."""
    from ..utils import format_months

    a = assessment
    if a.status != "ok":
        return {"file": a.source, "sex": None, "bone_age_months": None, "error": a.rejection}
    data = {"file": a.source, "sex": a.sex, "bone_age_months": round(float(a.bone_age_months), 2),
            "bone_age": format_months(a.bone_age_months), "sex_source": a.sex_source}
    if a.sex_probability is not None:
        data["sex_probability"] = round(float(a.sex_probability), 3)
    u = a.uncertainty
    data["bone_age_interval_months"] = None if u is None else [round(float(u["low_months"]), 2),
                                                                round(float(u["high_months"]), 2)]
    if u is not None:
        data["bone_age_interval_level"] = float(u["level"])
        data["bone_age_interval_calibrated"] = bool(u.get("calibrated", False))
    if u is not None and u.get("sd_months") is not None:
        data["bone_age_sd_months"] = round(float(u["sd_months"]), 2)
    if a.bones is not None:
        full = a.to_dict()
        data.update({key: full[key] for key in ("bones", "rus_chn_score", "rus_chn") if key in full})
    if evidence_file is not None:
        data["evidence"] = evidence_file
    return data


def _write_evidence(results, out_dir: Path) -> dict[int, str]:
    """One PNG per assessed image under ``out_dir``: the model's evidence on the radiograph -> {index: file}."""
    from ..explain import Evidence, save_evidence

    written: dict[int, str] = {}
    used: set[str] = set()
    for i, r in enumerate(results):
        if r.status == "ok" and r.evidence is not None:
            name = unique_name(Path(r.source).stem, f"_{r.evidence_kind}.png", used)
            written[i] = str(save_evidence(Evidence(r.evidence_kind, r.evidence_label, r.evidence), out_dir / name))
    return written
