"""Speed of boneage on this machine, as ratios against plain-PyTorch references measured in the same run.

    python benchmarks/bench_speed.py [--model PATH] [--repeats 50] [--train-steps 40] [--out results.md]

1. Prediction: single-image latency (p50/p95) of ``Assessor.assess_files`` (read + preprocess +
   model) and of the model alone; batch throughput; and the wall time of one ``boneage predict``
   process (Python start-up and imports included). Reference: the same network called directly on a
   ready tensor with ``torch.inference_mode`` in fp32.
2. Runtimes: the model on a ready tensor in eager fp32, bf16 autocast + channels-last and onnxruntime; the
   file -> assessment path with ``--runtime torch`` and ``--runtime onnx``; the start of a process (``import
   torch`` against a whole ``boneage predict``).
3. Training: images/s of boneage's loop (``boneage.training.train``: on-the-fly augmentation, bf16
   autocast, channels-last, EMA) against a plain PyTorch loop on the same model and batch size (fp32,
   contiguous tensors, no augmentation, no EMA), both on the same in-memory images.

Uses ../shared/data when present (real radiographs), synthetic phantoms otherwise; prints which.
Timings never go into unit tests: this script is the place for them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))  # ms


def sample_images(tmp: Path) -> tuple[list[Path], str]:
    folder = SHARED / "rsna-512px-samples" / "images"
    if folder.exists():
        return sorted(folder.glob("*.png")), f"{folder} (40 real RSNA radiographs, long side 512 px)"
    from PIL import Image

    from boneage.data import hand_phantom

    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        path = tmp / f"p{i}.png"
        Image.fromarray(hand_phantom(rng.uniform(12, 216), "F", 512, rng)).save(path)
        paths.append(path)
    return paths, "synthetic phantoms 512 px (../shared/data not found)"


def bench_predict(model_spec, repeats: int, tmp: Path) -> dict:
    from boneage.api import Assessor
    from boneage.preprocess import to_model_input

    paths, source = sample_images(tmp)
    assessor = Assessor(model_spec)
    model, preprocess = assessor.predictor.model, assessor.predictor.preprocess
    for _ in range(5):
        list(assessor.assess_files([paths[0]], sex="F"))
    single = []
    for i in range(repeats):
        t = time.perf_counter()
        list(assessor.assess_files([paths[i % len(paths)]], sex="F"))
        single.append(time.perf_counter() - t)
    # model alone, plain torch on a ready tensor (the reference)
    x = to_model_input(torch.rand(1, 1, *preprocess.image_size), preprocess)
    male = torch.ones(1)
    with torch.inference_mode():
        for _ in range(5):
            model(x, male)
        plain = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x, male)
            plain.append(time.perf_counter() - t)
    batch_paths = (paths * 4)[:160]
    t = time.perf_counter()
    list(assessor.assess_files(batch_paths, sex="F", batch_size=32))
    batch_s = time.perf_counter() - t
    with torch.inference_mode():
        xb = to_model_input(torch.rand(32, 1, *preprocess.image_size), preprocess)
        mb = torch.ones(32)
        model(xb, mb)
        t = time.perf_counter()
        for _ in range(5):
            model(xb, mb)
        plain_batch_s = (time.perf_counter() - t) / (5 * 32)
    # one whole CLI process
    exe = [sys.executable, "-m", "boneage", "predict", str(paths[0]), "--sex", "F"]
    if model_spec:
        exe += ["--model", str(model_spec)]
    process = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(exe, check=True, capture_output=True)
        process.append(time.perf_counter() - t)
    return {
        "source": source,
        "model": f"{assessor.model_info['name']} {assessor.model_info['version']}",
        "input_size": list(preprocess.image_size),
        "single_p50_ms": percentile(single, 50),
        "single_p95_ms": percentile(single, 95),
        "model_only_p50_ms": percentile(plain, 50),
        "model_only_p95_ms": percentile(plain, 95),
        "batch_images_per_s": len(batch_paths) / batch_s,
        "plain_batch_images_per_s": 1.0 / plain_batch_s,
        "cli_process_s": statistics.median(process),
    }


def _timed(call, repeats: int) -> list[float]:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


def bench_runtimes(model_spec, repeats: int, tmp: Path) -> dict:
    """The same model three ways on one ready tensor (eager fp32; bf16 autocast + channels-last; onnxruntime), the
    file -> months path with each runtime, and a process's start: ``import torch`` against ``boneage predict``."""
    from boneage.api import Assessor
    from boneage.preprocess import to_model_input
    from boneage.utils import autocast

    os.environ.setdefault("BONEAGE_CACHE", str(tmp / "cache"))
    paths, _ = sample_images(tmp)
    torch_assessor, onnx_assessor = Assessor(model_spec), Assessor(model_spec, runtime="onnx")
    model, preprocess = torch_assessor.predictor.model, torch_assessor.predictor.preprocess
    x = to_model_input(torch.rand(1, 1, *preprocess.image_size), preprocess)
    male = torch.ones(1)
    out = {}
    with torch.inference_mode():
        out["eager_fp32_ms"] = percentile(_timed(lambda: model(x, male), repeats), 50)
        xc = x.contiguous(memory_format=torch.channels_last)
        model_cl = model.to(memory_format=torch.channels_last)

        def bf16():
            with autocast(torch.device("cpu"), "bf16"):
                model_cl(xc, male)

        out["bf16_channels_last_ms"] = percentile(_timed(bf16, repeats), 50)
        model.to(memory_format=torch.contiguous_format)
        ort_model = onnx_assessor.predictor.model
        out["onnxruntime_ms"] = percentile(_timed(lambda: ort_model(x, male), repeats), 50)
    for label, assessor in (("torch", torch_assessor), ("onnx", onnx_assessor)):
        times = _timed(lambda a=assessor: list(a.assess_files([paths[0]], sex="F")), repeats)
        out[f"file_{label}_p50_ms"] = percentile(times, 50)
        batch = (paths * 4)[:160]
        t = time.perf_counter()
        list(assessor.assess_files(batch, sex="F", batch_size=32))
        out[f"batch_{label}_images_per_s"] = len(batch) / (time.perf_counter() - t)
    starts = {"import torch": [sys.executable, "-c", "import torch"],
              "boneage predict": [sys.executable, "-m", "boneage", "predict", str(paths[0]), "--sex", "F"]}
    for label, command in starts.items():
        if model_spec:
            command = command + (["--model", str(model_spec)] if label != "import torch" else [])
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
        out[f"start {label}"] = statistics.median(walls)
    return out


def runtime_lines(r: dict) -> list[str]:
    eager = r["eager_fp32_ms"]
    return [
        "",
        "| the model on one ready tensor (all its members, one view) | ms, p50 | ratio to eager fp32 |",
        "|---|---:|---:|",
        f"| PyTorch eager, fp32 | {eager:.1f} | 1.00 |",
        f"| PyTorch, bf16 autocast + channels-last | {r['bf16_channels_last_ms']:.1f} | {r['bf16_channels_last_ms'] / eager:.2f} |",
        f"| onnxruntime, fp32 (`--runtime onnx`) | {r['onnxruntime_ms']:.1f} | {r['onnxruntime_ms'] / eager:.2f} |",
        "",
        "| file -> assessment | `--runtime torch` | `--runtime onnx` | ratio onnx / torch |",
        "|---|---:|---:|---:|",
        f"| single image, p50 | {r['file_torch_p50_ms']:.1f} ms | {r['file_onnx_p50_ms']:.1f} ms | "
        f"{r['file_onnx_p50_ms'] / r['file_torch_p50_ms']:.2f} |",
        f"| batch throughput (files, batch 32) | {r['batch_torch_images_per_s']:.0f} img/s | "
        f"{r['batch_onnx_images_per_s']:.0f} img/s | {r['batch_onnx_images_per_s'] / r['batch_torch_images_per_s']:.2f} |",
        "",
        f"Start: `python -c \"import torch\"` {r['start import torch']:.2f} s; `boneage predict FILE` {r['start boneage predict']:.2f} s "
        f"(beyond torch: {r['start boneage predict'] - r['start import torch']:.2f} s).",
    ]


def bench_train(model_spec, steps: int, tmp: Path) -> dict:
    """Both loops train the architecture and preprocessing of the model being benchmarked."""
    from boneage.data import load_images, load_rsna
    from boneage.models import create_model, load_model
    from boneage.training import TrainConfig, train

    recipe = (load_model(model_spec).config.get("training") or {}).get("recipe")
    base = TrainConfig.from_dict(recipe) if recipe else TrainConfig()
    rsna = SHARED / "rsna-100px"
    limit = steps * base.batch_size + 200
    if rsna.exists():
        images, labels, source = rsna / "images", rsna / "boneage-training-dataset.csv", f"real RSNA, first {limit} ids"
    else:
        from boneage.data import write_phantom_dataset

        images, labels = write_phantom_dataset(tmp / "ph", limit, size=100, seed=0)
        source = "synthetic phantoms 100 px"
    overrides = dict(out_dir=str(tmp / "run"), images=str(images), labels=str(labels), manifest=None, limit=limit,
                     epochs=1, val_fraction=0.05, split_file=None, progress=False, cache_dir=str(tmp / "cache"),
                     threads=None, device="cpu", max_steps=None)
    config = TrainConfig.from_dict({**base.to_dict(), **overrides})
    # warm the image cache so both loops start from the same in-memory data
    train(TrainConfig.from_dict({**config.to_dict(), "out_dir": str(tmp / "warm"), "max_steps": 2}), log=lambda *a: None)
    summary = train(config, log=lambda *a: None)
    history = json.loads((tmp / "run" / "history.json").read_text())
    boneage_ips = history[-1]["train_images_per_s"]
    # plain PyTorch loop on the same model, batch size and images: fp32, contiguous, no augmentation/EMA
    samples = load_rsna(images, labels)[:limit]
    from boneage.segmentation import model_preprocessing

    data = torch.from_numpy(load_images(samples, config.preprocess, cache_dir=tmp / "cache",  # the trainer's cache
                                        pipeline=model_preprocessing(config.preprocess, check_hand=False)))
    ages = torch.tensor([s.bone_age_months for s in samples])
    males = torch.tensor([s.male for s in samples])
    torch.manual_seed(0)
    spec = config.model_spec()
    model = create_model(spec["name"], **spec["kwargs"])
    model.init_from_labels(ages)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    bs = config.batch_size
    n_steps = summary["steps"]
    t = time.perf_counter()
    for _ in range(n_steps):
        index = torch.randint(0, len(samples), (bs,))
        x = (data[index].unsqueeze(1).float() / 255.0 - config.preprocess.mean) / config.preprocess.std
        outputs = model(x, males[index])
        loss = model.compute_loss(outputs, {"bone_age_months": ages[index]})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    plain_ips = n_steps * bs / (time.perf_counter() - t)
    return {"source": source, "steps": n_steps, "batch_size": bs, "boneage_images_per_s": boneage_ips,
            "plain_images_per_s": plain_ips, "model": f"{spec['name']} {spec['kwargs']}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model to time (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    hardware = f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        p = bench_predict(args.model, args.repeats, tmp)
        t = None if args.skip_train else bench_train(args.model, args.train_steps, tmp)
        r = bench_runtimes(args.model, args.repeats, tmp)
    lines = [
        f"Hardware: {hardware}. Model: {p['model']} at {p['input_size'][0]}x{p['input_size'][1]} px.",
        f"Prediction images: {p['source']}.",
        "",
        "| measurement | boneage | plain PyTorch reference | ratio (boneage / reference) |",
        "|---|---:|---:|---:|",
        f"| single image, p50 latency (file -> months) | {p['single_p50_ms']:.1f} ms | {p['model_only_p50_ms']:.1f} ms (model only) | {p['single_p50_ms'] / p['model_only_p50_ms']:.2f} |",
        f"| single image, p95 latency | {p['single_p95_ms']:.1f} ms | {p['model_only_p95_ms']:.1f} ms (model only) | {p['single_p95_ms'] / p['model_only_p95_ms']:.2f} |",
        f"| batch throughput (files, batch 32) | {p['batch_images_per_s']:.0f} img/s | {p['plain_batch_images_per_s']:.0f} img/s (tensors) | {p['batch_images_per_s'] / p['plain_batch_images_per_s']:.2f} |",
        f"| one `boneage predict` process (imports included) | {p['cli_process_s']:.2f} s | | |",
    ]
    if t is not None:
        lines.append(
            f"| training throughput ({t['model']}; {t['steps']} steps x {t['batch_size']}, {t['source']}) | {t['boneage_images_per_s']:.0f} img/s "
            f"(bf16, channels-last, augmentation, EMA) | {t['plain_images_per_s']:.0f} img/s (fp32, no augmentation) | "
            f"{t['boneage_images_per_s'] / t['plain_images_per_s']:.2f} |"
        )
    lines += runtime_lines(r)
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
