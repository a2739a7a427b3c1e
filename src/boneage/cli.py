"""The ``boneage`` command. Each subcommand parses its arguments and delegates to one function.

Contract (other tools call these; keep them stable):

* ``boneage predict FILE... [--sex M|F] [--model PATH] [--json]``
* ``boneage evaluate --images DIR --labels CSV [--model PATH] [--json]``
* ``boneage report IMAGE [--sex M|F] [--age 9y4m] [--height CM] [--model PATH] -o OUT.pdf|OUT.html [--json]``
* ``boneage serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--model PATH] [--api-token TOKEN]``
* ``boneage dicom-node [--port 11112] [--ae-title BONEAGE] [--data-dir DIR] [--destination AE@HOST:PORT]``
* ``boneage segment IMAGE... -o DIR [--segmenter PATH] [--overlay]``
* ``boneage train ...``, ``boneage train-segmenter ...`` and ``boneage models``

Bad input ends with one line on stderr naming the problem and exit code 2, never a traceback; in a
batch, the files that can be read are still predicted. ``BONEAGE_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import BoneAgeError, InvalidInputError
from .utils import atomic_write, format_months

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (plus exit code 2)."""

    def error(self, message: str):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _sex_arg(value: str) -> str:
    from .io import normalize_sex

    try:
        return normalize_sex(value)
    except InvalidInputError:
        raise argparse.ArgumentTypeError(f"sex must be M or F, got {value!r}") from None


def _int_arg(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


_positive_int = _int_arg(1)
_non_negative_int = _int_arg(0)


def _segmenter_size(value: str) -> int:
    number = _positive_int(value)
    if number < 16 or number % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 of at least 16 (the U-Net halves it three times), got {number}")
    return number


def _port_arg(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {value!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {number}")
    return number


def _float_arg(check, requirement: str):
    """An argparse type: a float for which ``check`` holds, else an error saying ``requirement``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if not check(number):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return number

    return parse


_positive_float = _float_arg(lambda v: v > 0, "greater than 0")
_fraction = _float_arg(lambda v: 0 <= v < 1, "at least 0 and below 1")


def _size_arg(value: str) -> tuple[int, int]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {value!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 8:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with sides of at least 8, got {value!r}")
    return sizes[0], sizes[1]


def _float_pair(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers as LOW,HIGH, got {value!r}") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {value!r}")
    return low, high


def _output_file(value: str) -> str:
    """An output path whose folder exists and is writable (checked before any work is done)."""
    folder = Path(value).expanduser().resolve().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    return value


def _age_arg(value: str) -> float:
    from .clinical import parse_age

    try:
        return parse_age(value)
    except InvalidInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _height_arg(value: str) -> float:
    from .clinical.reference import HEIGHT_RANGE_CM

    low, high = HEIGHT_RANGE_CM
    return _float_arg(lambda v: low <= v <= high, f"a height between {low:g} and {high:g} cm")(value)


def _report_file(value: str) -> str:
    """A report path ending in .pdf or .html in a writable folder (checked before any work is done)."""
    from .clinical import report_format

    try:
        report_format(value)
    except InvalidInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return _output_file(value)


# ------------------------------------------------------------------------------------------ commands
def _expand_inputs(items: list[str]) -> list[str]:
    from .io import supported_suffixes

    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in supported_suffixes())
            except OSError:
                found = []
            if not found:
                files.append(item)  # reported as an error for that folder
            files.extend(str(p) for p in found)
        else:
            files.append(item)
    return files


def _prediction(assessment, evidence_file: str | None) -> dict:
    """One ``predict --json`` item: file, sex, bone age (months and text), where the sex came from, the
    model's SD when it has one, the evidence file; or the error."""
    data = {"file": assessment.source, "sex": assessment.sex if assessment.status == "ok" else None}
    if assessment.status != "ok":
        return {**data, "bone_age_months": None, "error": assessment.rejection}
    data.update(bone_age_months=round(float(assessment.bone_age_months), 2),
                bone_age=format_months(assessment.bone_age_months), sex_source=assessment.sex_source)
    if assessment.uncertainty is not None:
        data["bone_age_sd_months"] = round(float(assessment.uncertainty["sd_months"]), 2)
    if evidence_file is not None:
        data["evidence"] = evidence_file
    return data


def cmd_predict(args) -> int:
    from .api import Assessor

    assessor = Assessor(args.model, threads=args.threads, check_hand=args.hand_check)
    if args.explain and not assessor.predictor.model.capabilities.evidence:
        raise InvalidInputError(f"model {assessor.model_info['name']} offers no visual evidence for --explain")
    results = list(assessor.assess_files(_expand_inputs(args.files), sex=args.sex, batch_size=args.batch_size,
                                         explain=bool(args.explain)))
    for r in results:
        if r.status != "ok" and Path(r.source).is_dir():
            r.rejection = f"{r.source}: folder holds no readable supported image files"
    evidence_files = _write_evidence(results, Path(args.explain)) if args.explain else {}
    failed = [r for r in results if r.status != "ok"]
    if args.json:
        print(json.dumps([_prediction(r, evidence_files.get(i)) for i, r in enumerate(results)], indent=2))
    else:
        for i, r in enumerate(results):
            if r.status == "ok":
                extra = f"\t{evidence_files[i]}" if i in evidence_files else ""
                print(f"{r.source}\t{r.sex}\t{r.bone_age_months:.1f} months\t{format_months(r.bone_age_months)}{extra}")
    for r in failed:
        print(f"boneage predict: error: {r.rejection}", file=sys.stderr)
    return EXIT_USAGE if failed else 0


def _write_evidence(results, out_dir: Path) -> dict[int, str]:
    """One PNG per assessed image under ``out_dir``: the model's evidence (ROIs, Grad-CAM) on the
    radiograph. Returns {result index: file}."""
    from .explain import Evidence, save_evidence

    written: dict[int, str] = {}
    used: set[str] = set()
    for i, r in enumerate(results):
        if r.status != "ok" or r.evidence is None:
            continue
        kind = r.evidence_kind or "evidence"
        stem, n = Path(r.source).stem, 1
        name = f"{stem}_{kind}.png"
        while name in used:  # same file name from two folders
            n += 1
            name = f"{stem}-{n}_{kind}.png"
        used.add(name)
        written[i] = str(save_evidence(Evidence(kind, r.evidence_label, r.evidence), out_dir / name))
    return written


def _explain_dir(value: str) -> str:
    """An evidence folder: created if missing (its parent must exist), and writable."""
    folder = Path(value).expanduser()
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot create folder {folder} ({err.strerror})") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{folder} is not a writable folder")
    return value


def _save_png(array, path: Path) -> None:
    """Write a uint8 array as PNG atomically (a temporary file, then a rename)."""
    from PIL import Image

    atomic_write(path, lambda stream: Image.fromarray(array).save(stream, format="PNG"), fsync=False)


def cmd_segment(args) -> int:
    import numpy as np

    from .errors import ImageReadError
    from .io import read_image
    from .preprocess import normalize_intensity, to_grayscale
    from .segmentation import load_segmenter, overlay_mask

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    segmenter = load_segmenter(args.segmenter)
    out_dir = Path(args.output)
    failed, used = 0, set()
    for file in _expand_inputs(args.files):
        try:
            if Path(file).is_dir():
                raise ImageReadError(f"{file}: folder holds no readable supported image files")
            image = read_image(file)
            mask = segmenter.predict_mask(image.pixels, source=file)
        except BoneAgeError as err:
            print(f"boneage segment: error: {err}", file=sys.stderr)
            failed += 1
            continue
        stem, n = Path(file).stem, 1
        while stem in used:  # the same file name from two folders
            n += 1
            stem = f"{Path(file).stem}-{n}"
        used.add(stem)
        mask_path = out_dir / f"{stem}_mask.png"
        _save_png(mask.astype(np.uint8) * 255, mask_path)
        line = f"{file}\t{mask_path}\t{mask.mean():.1%} of the image"
        if args.overlay:
            overlay_path = out_dir / f"{stem}_overlay.png"
            _save_png(overlay_mask(normalize_intensity(to_grayscale(image.pixels)), mask), overlay_path)
            line += f"\t{overlay_path}"
        print(line)
    return EXIT_USAGE if failed else 0


def cmd_train_segmenter(args) -> int:
    from .segmentation.training import train_segmenter

    command = "boneage " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("boneage") else None
    summary = train_segmenter(
        args.images, args.keypoints, args.out_dir, size=args.size, epochs=args.epochs, extra_images=args.extra_images,
        batch_size=args.batch_size, lr=args.lr, split_file=None if args.split_file == "none" else args.split_file,
        seed=args.seed, threads=args.threads, precision=args.precision, device=args.device, command=command,
        log=(lambda message: print(message, file=sys.stderr, flush=True)),
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_report(args) -> int:
    from .api import Assessor
    from .clinical import write_report

    assessor = Assessor(args.model, threads=args.threads)
    assessment = assessor.assess(args.image, sex=args.sex, age=args.age, height_cm=args.height, reject=True)
    write_report(assessment, args.output)
    if args.json:
        print(json.dumps(assessment.to_dict(), indent=2))
    elif assessment.status == "ok":
        a = assessment
        reading = "SDS not computed" if a.sds is None else f"SDS {a.sds:+.2f} ({a.reading})"
        print(f"{args.image}\t{a.sex}\t{a.bone_age_months:.1f} months\t{a.bone_age_text}\t{reading}\t{args.output}")
    if assessment.status == "rejected":
        print(f"boneage report: error: {assessment.rejection} (image rejected; {args.output} says so)", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_rsna
    from .evaluation import format_metrics_table, plot_agreement
    from .evaluation.evaluate import evaluate_samples
    from .inference import Predictor

    samples = load_rsna(args.images, args.labels)
    predictor = Predictor(args.model, threads=args.threads, check_hand=args.hand_check)
    result = evaluate_samples(predictor, samples, batch_size=args.batch_size, progress=not args.json and sys.stderr.isatty())
    for item in result.skipped:
        print(f"boneage evaluate: warning: skipped {item['error']}", file=sys.stderr)
    metrics = dict(result.metrics)
    metrics["model"] = {"name": predictor.loaded.name, "version": predictor.loaded.version, "source": predictor.loaded.source}
    if args.predictions:
        rows = [f"{s.id},{s.sex},{s.bone_age_months},{p:.2f}" for s, p in zip(result.samples, result.predicted_months)]
        atomic_write(args.predictions, "id,sex,bone_age_months,predicted_months\n" + "\n".join(rows) + "\n")
    if args.plot:
        plot_agreement(result.predicted_months, [s.bone_age_months for s in result.samples], args.plot,
                       sexes=[s.sex for s in result.samples], title=f"{predictor.loaded.name}: MAE {metrics['mae_months']:.2f} months")
    if args.json:
        metrics["skipped"] = result.skipped
        print(json.dumps(metrics, indent=2))
    else:
        print(f"model: {predictor.loaded.name} ({predictor.loaded.source})")
        print(format_metrics_table(metrics))
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s)")
    return EXIT_USAGE if result.skipped else 0  # metrics printed, but not every image was evaluated


def cmd_models(args) -> int:
    from .models import default_model_path, list_models, load_model, model_description

    names = list_models()
    if args.json:
        print(json.dumps([{"name": n, "description": model_description(n)} for n in names], indent=2))
        return 0
    print("registered models (boneage train --model NAME):")
    column = max(len(n) for n in names) + 2
    for name in names:
        print(f"  {name:<{column}}{model_description(name)}")
    try:
        loaded = load_model(None)
        mae = loaded.config.get("metrics", {}).get("validation", {}).get("mae_months")
        print(f"default model: {loaded.name} {loaded.version}, validation MAE {mae} months ({default_model_path()})")
    except BoneAgeError as err:
        print(f"default model: none ({err})")
    return 0


def cmd_train(args) -> int:
    from .preprocess import AugmentConfig, PreprocessConfig
    from .training import TrainConfig, train

    augment = AugmentConfig.none() if args.no_augment else AugmentConfig(
        hflip=args.hflip, rotation_deg=args.rotation, scale=args.scale_range, translate=args.translate,
        contrast=args.contrast, brightness=args.brightness, gamma=args.gamma,
    )
    config = TrainConfig(
        out_dir=args.out_dir, images=args.images, labels=args.labels, manifest=args.manifest,
        val_fraction=args.val_fraction, split_seed=args.split_seed, split_file=args.split_file, limit=args.limit,
        cache_dir=args.cache_dir, keypoints=args.keypoints, annotated_only=args.annotated_only, model=args.model,
        head=args.head, width=args.width, label_range=args.label_range,
        model_kwargs={"max_pool": args.max_pool},
        preprocess=PreprocessConfig(
            image_size=args.image_size, resize=args.resize, normalization=args.normalization, hand=args.hand,
            crop_margin=args.crop_margin, fix_inversion=args.fix_inversion,
            contrast="hand" if args.hand_contrast else "image", segmenter=args.segmenter,
        ),
        augment=augment, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        ema_decay=args.ema_decay, val_every=args.val_every, max_steps=args.max_steps, seed=args.seed, device=args.device,
        precision=args.precision, channels_last=not args.no_channels_last, threads=args.threads,
        progress=not args.no_progress, tta=args.tta,
    )
    from .models import create_model

    create_model(config.model, **config.model_spec()["kwargs"])  # fail fast on a bad name or option
    command = "boneage " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("boneage") else None
    summary = train(config, resume=args.resume, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "val_metrics"}, indent=2))
    return 0


def cmd_ensemble(args) -> int:
    import torch

    from .data import apply_split, load_rsna, load_split
    from .evaluation.evaluate import evaluate_samples
    from .inference import Predictor
    from .models import combine_models, export_model, load_model, write_model_config

    members = [load_model(path) for path in args.models]
    model, config = combine_models(members)
    config["version"] = "+".join(sorted({m.version for m in members}))[:120]
    config["training"] = members[0].config.get("training")
    member_dirs = [Path(m) if Path(m).is_dir() else Path(m).parent for m in args.models]
    member_splits = [d / "split.json" for d in member_dirs if (d / "split.json").exists()]
    if len({json.dumps(load_split(f)["val"]) for f in member_splits}) > 1:
        raise InvalidInputError("the members were trained on different train/validation splits; "
                                "an ensemble's validation MAE would include training images")
    split_file = Path(args.split_file) if args.split_file else next(iter(member_splits), None)
    split = load_split(split_file) if split_file is not None else None
    samples = None
    if args.images and args.labels:  # read the data before anything is written
        samples = load_rsna(args.images, args.labels)
        if split is not None:
            _, samples = apply_split(samples, split)
    out = export_model(args.out_dir, model, config, dtype=torch.float16)
    if split_file is not None:
        (out / "split.json").write_text(split_file.read_text())
    if samples is not None:
        result = evaluate_samples(Predictor(load_model(out), check_hand=False), samples)  # the exported float16 model itself
        config["metrics"] = {"validation": result.metrics, "measured_on": "exported float16 weights",
                             "split": "validation split of the members" if split is not None else "all images"}
        write_model_config(out, config)
        member_maes = ", ".join(str(m.config.get("metrics", {}).get("validation", {}).get("mae_months")) for m in members)
        print(f"ensemble of {len(members)}: MAE {result.metrics['mae_months']:.2f} months on {result.metrics['n']} "
              f"images (members: {member_maes})")
    print(f"wrote {out}")
    return 0


def cmd_serve(args) -> int:
    from .service.app import serve

    serve(host=args.host, port=args.port, data_dir=args.data_dir, model=args.model, api_token=args.api_token,
          max_upload_mb=args.max_upload_mb, database_url=args.database_url)
    return 0


# ------------------------------------------------------------------------------------------- parsing
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="boneage", description="Automated skeletal bone age assessment from hand radiographs.")
    parser.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("predict", help="bone age of one or more radiographs (files or folders)")
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (PNG, JPEG, TIFF, DICOM) or folders")
    p.add_argument("--sex", type=_sex_arg, help="M or F (default: read from DICOM PatientSex)")
    p.add_argument("--model", default=None, help="model folder, .safetensors or .pt checkpoint (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference")
    p.add_argument("--no-hand-check", dest="hand_check", action="store_false",
                   help="assess images even where the segmenter finds no hand (research use)")
    p.add_argument("--explain", type=_explain_dir, default=None, metavar="OUT_DIR",
                   help="write each image's visual evidence as PNG here (ALA-Net: its 17 ROIs; residual attention: "
                        "each module's mask; ResNets: Grad-CAM)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("segment", help="hand masks of radiographs: one <stem>_mask.png (255 = hand) per image")
    p.add_argument("files", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, TIFF, DICOM) or folders")
    p.add_argument("-o", "--output", required=True, type=_explain_dir, metavar="DIR",
                   help="folder for the masks (created if missing)")
    p.add_argument("--segmenter", default=None, metavar="PATH",
                   help="segmenter folder or its model.safetensors (default: the shipped segmenter)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png: the mask outline over the image")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("report", help="clinical report (PDF or HTML) of one radiograph: bone age, SDS, adult height")
    p.add_argument("image", metavar="IMAGE", help="radiograph (PNG, JPEG, TIFF, DICOM)")
    p.add_argument("-o", "--output", required=True, type=_report_file, metavar="OUT.pdf|OUT.html",
                   help="report file; the suffix chooses PDF or self-contained HTML")
    p.add_argument("--sex", type=_sex_arg, help="M or F (default: read from DICOM PatientSex)")
    p.add_argument("--age", type=_age_arg, default=None, metavar="AGE",
                   help="chronological age: 9y4m, 9y, 4m or months (default: DICOM birth and study dates, else PatientAge)")
    p.add_argument("--height", type=_height_arg, default=None, metavar="CM",
                   help="height in cm, for the Bayley-Pinneau adult height prediction")
    p.add_argument("--model", default=None, help="model folder, .safetensors or .pt checkpoint (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print the assessment as JSON instead of a summary line")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="web service: REST API and browser UI, assessments stored in a data folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port_arg, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder of the database and the uploaded images (default: $BONEAGE_DATA_DIR)")
    p.add_argument("--model", default=None, help="model folder, .safetensors or .pt checkpoint (default: the shipped model)")
    p.add_argument("--api-token", default=None, metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on /api/* but /api/health (default: $BONEAGE_API_TOKEN)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=32.0, metavar="MB", help="largest image accepted")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="SQLAlchemy URL of the assessment database, e.g. postgresql+psycopg://user@host/db "
                        "(default: $BONEAGE_DATABASE_URL, else SQLite in DIR)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("evaluate", help="accuracy of a model on a labelled RSNA-layout collection")
    p.add_argument("--images", required=True, help="folder of <id>.png images")
    p.add_argument("--labels", required=True, help="CSV with id,boneage,male (extra columns ignored)")
    p.add_argument("--model", default=None, help="model to evaluate (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--plot", type=_output_file, default=None, metavar="PNG", help="write a scatter + Bland-Altman plot")
    p.add_argument("--predictions", type=_output_file, default=None, metavar="CSV", help="write per-image predictions")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--hand-check", action="store_true",
                   help="skip (and list) images the no-hand check refuses, as predict does; default: assess every image")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the registered models and the default model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("ensemble", help="combine trained models (same preprocessing) into one ensemble model")
    p.add_argument("models", nargs="+", metavar="MODEL", help="exported model folders or checkpoints")
    p.add_argument("--out-dir", required=True, help="folder for the ensemble's model.safetensors + config.json")
    p.add_argument("--images", help="evaluate on this RSNA image folder ...")
    p.add_argument("--labels", help="... with these labels, restricted to the members' validation split")
    p.add_argument("--split-file", help="split.json to evaluate on (default: the first member's)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("train", help="train a model (torchrun-compatible for several GPUs)")
    d = p.add_argument_group("data")
    d.add_argument("--images", help="folder of <id>.png (RSNA layout)")
    d.add_argument("--labels", help="RSNA CSV id,boneage,male")
    d.add_argument("--manifest", help="generic CSV path,bone_age_months,sex[,chronological_age_months]")
    d.add_argument("--val-fraction", type=_fraction, default=0.1)
    d.add_argument("--split-seed", type=int, default=0)
    d.add_argument("--split-file", default=None, help="reuse a saved split.json instead of drawing one")
    d.add_argument("--limit", type=_positive_int, default=None, help="use only the first N samples")
    d.add_argument("--cache-dir", default=None, help="cache decoded images here as .npy")
    d.add_argument("--keypoints", default=None, metavar="PATH",
                   help="hand keypoints (COCO JSON or its folder) supervising an ALA-Net's region proposal network")
    d.add_argument("--annotated-only", action="store_true",
                   help="train on the images that have keypoints only (an RPN trained alone: --model alanet18_rpn)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="global_resnet18", help="registered model name (see 'boneage models')")
    m.add_argument("--head", default="ordinal", choices=["ordinal", "l1", "mse"])
    m.add_argument("--width", type=_positive_float, default=0.5, help="ResNet width factor (1.0 = standard)")
    m.add_argument("--max-pool", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the ResNet stem's max pooling (default: off, for features twice as fine at small inputs)")
    m.add_argument("--label-range", type=_float_pair, default=(0.0, 228.0), metavar="MIN,MAX", help="months")
    m.add_argument("--image-size", type=_size_arg, default=(100, 100), metavar="N|HxW")
    m.add_argument("--resize", default="stretch", choices=["stretch", "pad"])
    m.add_argument("--normalization", default="percentile", choices=["percentile", "minmax"])
    h = p.add_argument_group("hand clean-up (stored with the model; predict applies it the same way)")
    h.add_argument("--hand", default="none", choices=["none", "mask", "crop", "crop_mask"],
                   help="use the hand segmenter's mask: blank what is outside the hand, crop to it, or both")
    h.add_argument("--crop-margin", type=float, default=0.05, help="added to the hand's box, fraction of its size")
    h.add_argument("--fix-inversion", action="store_true", help="detect white-background images and invert them")
    h.add_argument("--hand-contrast", action="store_true",
                   help="percentile normalisation over the hand's pixels instead of the whole image")
    h.add_argument("--segmenter", default="default", metavar="PATH",
                   help="hand segmenter folder (default: the one shipped with boneage)")
    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true")
    a.add_argument("--hflip", type=float, default=0.5, help="probability")
    a.add_argument("--rotation", type=float, default=20.0, help="degrees, +-")
    a.add_argument("--scale-range", type=_float_pair, default=(0.85, 1.15), metavar="LOW,HIGH")
    a.add_argument("--translate", type=float, default=0.08, help="fraction of the size, +-")
    a.add_argument("--contrast", type=float, default=0.2)
    a.add_argument("--brightness", type=float, default=0.1)
    a.add_argument("--gamma", type=float, default=0.2)
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=_positive_int, default=45)
    o.add_argument("--batch-size", type=_positive_int, default=64)
    o.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    o.add_argument("--lr", type=_positive_float, default=2e-3)
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    o.add_argument("--warmup-epochs", type=float, default=1.0)
    o.add_argument("--ema-decay", type=float, default=0.998, help="0 disables the weight EMA")
    o.add_argument("--max-steps", type=_positive_int, default=None, help="stop after N optimiser steps")
    o.add_argument("--val-every", type=_positive_int, default=1, metavar="N", help="validate every N epochs (always after the last)")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out-dir", default="runs/default", help="checkpoints, split, logs and the exported model")
    r.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    r.add_argument("--no-channels-last", action="store_true")
    r.add_argument("--threads", type=_positive_int, default=None)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--tta", default="auto", choices=["auto", "hflip", "none"],
                   help="test-time augmentation stored with the exported model (auto: hflip if trained with flips)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-segmenter", help="train the U-Net hand segmenter on keypoint-refined classical masks")
    p.add_argument("--images", required=True, help="folder of <id>.png (RSNA layout, e.g. ../shared/data/rsna-100px/images)")
    p.add_argument("--keypoints", required=True, metavar="PATH", help="hand keypoints (COCO JSON or its folder)")
    p.add_argument("--out-dir", required=True, help="run folder: model/ (the exported segmenter) and history.json")
    p.add_argument("--epochs", type=_positive_int, default=16)
    p.add_argument("--size", type=_segmenter_size, default=128, help="input side in px (images are stretched to it)")
    p.add_argument("--extra-images", type=_non_negative_int, default=2000, metavar="N",
                   help="also train on N images without keypoints, with classical masks")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=3e-3)
    p.add_argument("--split-file", default="default", metavar="PATH",
                   help="hold out the annotated ids of this split.json's val list (default: the default model's split; "
                        "'none': a seeded 10%% of the annotated ids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_train_segmenter)

    from .service.dicom_node import (
        add_cli_subcommand,  # cheap: pynetdicom loads only when the node runs
    )

    add_cli_subcommand(sub)  # boneage dicom-node [--host] [--port] [--ae-title] [--data-dir] [--model] [--destination]
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except BoneAgeError as err:
        print(f"boneage {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"boneage {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `boneage predict ... | head`): not an error of ours
        sys.stderr.close()  # nothing more can be said; keeps Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug, not a user error: still one line unless debugging
        if os.environ.get("BONEAGE_DEBUG"):
            raise
        print(f"boneage {args.command}: internal error: {type(err).__name__}: {err} "
              "(set BONEAGE_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
