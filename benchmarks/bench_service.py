"""Load on the web service: N concurrent uploads to a real ``boneage serve``, with throughput and latency.

    python benchmarks/bench_service.py [--workers 8] [--requests 50] [--model PATH] [--json OUT.json]

Starts ``python -m boneage serve`` in a subprocess (uvicorn on a free loopback port, a temporary data
folder, the default model unless --model), waits for /api/health, then ``--workers`` threads each send
``--requests`` uploads (``POST /api/assessments``, multipart, sex and a chronological age) one after the
other. The images are the RSNA 512 px samples in ../shared/data (real radiographs), or synthetic
phantoms when they are absent; the script says which. Reports uploads/s, latency p50/p95/max, the error
count, and checks that the service lists exactly as many assessments as uploads succeeded, and that the
database holds them after the server has stopped. Exit code 1 when there was an error, a count differs,
or the server logged a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLES = SHARED / "rsna-512px-samples"


def load_images(limit: int = 40) -> tuple[list[tuple[str, bytes, str, float]], str]:
    """(file name, PNG bytes, sex, chronological age in months) for each test image, and where they came from."""
    labels = SAMPLES / "labels.csv"
    if labels.is_file():
        images = []
        with open(labels, newline="") as handle:
            for row in csv.DictReader(handle):
                path = SAMPLES / "images" / f"{row['id']}.png"
                if path.is_file():
                    sex = "M" if row["male"].strip().lower() in ("true", "1") else "F"
                    age = min(max(float(row["boneage"]), 12.0), 190.0)  # a plausible age near the reference bone age
                    images.append((path.name, path.read_bytes(), sex, age))
        if images:
            return images[:limit], f"{len(images[:limit])} RSNA 512 px samples ({SAMPLES})"
    from PIL import Image

    from boneage.data import hand_phantom

    rng = np.random.default_rng(0)
    images = []
    for k in range(limit):
        age, sex = float(rng.uniform(24, 190)), "M" if k % 2 else "F"
        buffer = io.BytesIO()
        Image.fromarray(hand_phantom(age, sex, size=512, rng=rng)).save(buffer, "PNG")
        images.append((f"phantom{k}.png", buffer.getvalue(), sex, round(age, 1)))
    return images, f"{limit} synthetic 512 px phantoms (../shared/data not found)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, model: str | None, log_path: Path, threads: int | None):
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "boneage", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if model:
        command += ["--model", model]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "wb") as log:  # the server keeps its own copy of the file handle
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"boneage serve exited with code {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit(f"boneage serve did not become healthy; see {log_path}")


def run_load(url: str, images, workers: int, requests: int):
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    ids: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1)

    def worker(index: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            barrier.wait()
            for k in range(requests):
                name, data, sex, age = images[(index * requests + k) % len(images)]
                started = time.perf_counter()
                response = None  # an exception must not report the previous upload's status
                try:
                    response = client.post("/api/assessments", files={"image": (name, data, "image/png")},
                                           data={"sex": sex, "chronological_age_months": str(age)})
                    elapsed = time.perf_counter() - started
                    ok = response.status_code == 201
                    body = response.json()
                except (httpx.HTTPError, ValueError) as err:
                    elapsed, ok, body = time.perf_counter() - started, False, {"detail": f"{type(err).__name__}: {err}"}
                with lock:
                    latencies.append(elapsed)
                    if ok:
                        ids.append(body["id"])
                    else:
                        errors.append(f"{name}: {getattr(response, 'status_code', '-')} {body.get('detail')}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="concurrent uploads to boneage serve")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=50, help="uploads per client")
    parser.add_argument("--model", default=None, help="model path (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import httpx

    from boneage.service import AssessmentStore

    images, origin = load_images()
    total = args.workers * args.requests
    print(f"images: {origin}; {args.workers} workers x {args.requests} uploads = {total}")
    with tempfile.TemporaryDirectory(prefix="boneage-bench-") as folder:
        data_dir, log_path = Path(folder) / "data", Path(folder) / "serve.log"
        process, url = start_server(data_dir, args.model, log_path, args.threads)
        try:
            model = httpx.get(f"{url}/api/health").json()["model"]
            # one warm-up upload (first-call costs), not counted in the timings but stored like the others
            name, data, sex, age = images[0]
            warm = httpx.post(f"{url}/api/assessments", files={"image": (name, data, "image/png")},
                              data={"sex": sex, "chronological_age_months": str(age)}, timeout=300)
            if warm.status_code != 201:
                raise SystemExit(f"warm-up upload failed: {warm.status_code} {warm.text}")
            wall, latencies, errors, ids = run_load(url, images, args.workers, args.requests)
            listed = httpx.get(f"{url}/api/assessments", params={"limit": 1}, timeout=60).json()["total"]
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        with AssessmentStore(data_dir) as store:
            stored = store.count()
            stored_ids = {item["id"] for page in range(0, stored, 200) for item in store.list(page, 200)["items"]}
        log_text = log_path.read_text(errors="replace")

    expected = len(ids) + 1  # with the warm-up
    ms = np.asarray(latencies) * 1000.0
    results = {
        "images": origin,
        "model": model,
        "workers": args.workers,
        "requests_per_worker": args.requests,
        "uploads": total,
        "succeeded": len(ids),
        "errors": len(errors),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
                       "max": round(float(ms.max()), 1), "mean": round(float(ms.mean()), 1)},
        "listed_by_api": listed,
        "stored_after_stop": stored,
        "every_upload_stored": stored == expected == listed and set(ids) <= stored_ids,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    print(f"model: {model['name']} {model['version']}")
    print(f"{results['uploads']} uploads in {results['wall_s']} s: {results['throughput_per_s']} uploads/s; "
          f"latency p50 {results['latency_ms']['p50']} ms, p95 {results['latency_ms']['p95']} ms, "
          f"max {results['latency_ms']['max']} ms")
    print(f"errors: {len(errors)}; assessments listed by the API: {listed}, in the database after stopping: "
          f"{stored} (expected {expected}, the warm-up included)")
    for error in errors[:10]:
        print(f"  error: {error}")
    results["server_tracebacks"] = log_text.count("Traceback")
    if results["server_tracebacks"]:
        print("the server log holds a traceback:\n" + log_text[-3000:])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if not errors and results["every_upload_stored"] and not results["server_tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
