"""The web service over real HTTP: uvicorn on loopback, the store on disk, the tiny model (the default one
only for the real-radiograph check). Uploads, pages, pictures, reports, decisions, 4xx answers, the token,
logs without patient data, concurrent uploads, and a restart of ``boneage serve`` that keeps every record."""

from __future__ import annotations

import io
import logging
import os
import re
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from boneage.service.app import sniff_image
from tests.helpers import make_dicom
from tests.service_helpers import (
    ThreadServer,
    phantom_png,
    png_bytes,
    start_cli_server,
    stop_cli_server,
)

PATIENT_NAME = "Doe^Jane"
UPLOAD_NAME = "Jane_Doe_hand.dcm"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with ThreadServer(tmp_path_factory.mktemp("service-data"), model=tiny_model_dir, max_upload_mb=1) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as opened:
        yield opened


def post(client, image: bytes, filename="hand.png", media_type="image/png", headers=None, **fields):
    data = {k: str(v) for k, v in fields.items() if v is not None}
    return client.post("/api/assessments", files={"image": (filename, image, media_type)}, data=data, headers=headers)


def one_line_detail(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    return detail


# -------------------------------------------------------------------------------------------- basics
def test_health_docs_and_ui_are_served(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model"] == {"name": "tiny-test", "version": "test"}
    assert health["auth_required"] is False
    spec = client.get("/openapi.json").json()
    for path in ("/api/assessments", "/api/assessments/{assessment_id}", "/api/assessments/{assessment_id}/decision",
                 "/api/assessments/{assessment_id}/image.png", "/api/assessments/{assessment_id}/report.pdf",
                 "/api/health"):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "does not replace, a qualified reader" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200, asset


def test_upload_then_get_list_pictures_and_report(client, server):
    response = post(client, phantom_png(130, "F"), sex="F", chronological_age_months="10y2m", height_cm=140)
    assert response.status_code == 201, response.text
    record = response.json()
    assert response.headers["location"] == f"/api/assessments/{record['id']}"
    assert record["status"] == "ok" and record["source"] == "api" and record["sex"] == "F"
    assert 0 <= record["bone_age_months"] <= 228
    assert record["chronological_age_months"] == 122.0
    assert record["sds"] is not None and record["reading"] in ("delayed", "within normal limits", "advanced")
    result = record["result"]
    assert result["bone_age_text"].endswith("months") and result["source"] == "hand.png"
    assert result["adult_height"] is not None and "disclaimer" in result
    assert result["evidence"]["available"] is True and "Grad-CAM" in result["evidence"]["label"]  # a ResNet

    again = client.get(record["links"]["self"]).json()
    assert again["id"] == record["id"] and again["bone_age_months"] == record["bone_age_months"]
    page = client.get("/api/assessments", params={"limit": 200}).json()
    assert record["id"] in [item["id"] for item in page["items"]] and page["total"] >= 1

    picture = client.get(record["links"]["image"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(picture.content))
    assert overlay.size == (256, 256) and overlay.mode == "RGB"  # the evidence overlay, not the gray radiograph
    # the rendered picture is a cache: without it the overlay is drawn again, the same
    (server.store.data_dir / "renders" / f"{record['id']}.png").unlink()
    again = client.get(record["links"]["image"])
    assert again.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(again.content))),
                                                       np.asarray(overlay))
    chart = client.get(record["links"]["chart"])
    assert chart.status_code == 200 and Image.open(io.BytesIO(chart.content)).format == "PNG"
    report = client.get(record["links"]["report"])
    assert report.status_code == 200 and report.headers["content-type"] == "application/pdf"
    assert report.content.startswith(b"%PDF")
    # the stored input image is the upload, byte for byte
    assert server.store.image_path(record["id"]).read_bytes() == phantom_png(130, "F")


def test_paging_newest_first(client):
    ids = [post(client, phantom_png(100 + k, "M", seed=k), sex="M").json()["id"] for k in range(3)]
    first = client.get("/api/assessments", params={"offset": 0, "limit": 2}).json()
    second = client.get("/api/assessments", params={"offset": 2, "limit": 2}).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    assert second["items"][0]["id"] == ids[0] and first["limit"] == 2 and first["total"] == second["total"]
    assert client.get("/api/assessments", params={"limit": 0}).status_code == 422
    for offset in ("-1", "1" + "0" * 30, "ten"):  # a huge offset would overflow SQLite's integers
        response = client.get("/api/assessments", params={"offset": offset})
        assert response.status_code == 422 and one_line_detail(response).startswith("offset"), offset


def test_dicom_upload_takes_sex_and_age_from_the_file(client, tmp_path):
    from boneage.data import hand_phantom

    pixels = hand_phantom(120, "M", size=200, rng=np.random.default_rng(3)).astype(np.uint16) * 16
    path = make_dicom(tmp_path / "hand.dcm", pixels, sex="M", age="010Y")
    response = post(client, path.read_bytes(), filename="hand.dcm", media_type="application/dicom")
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["sex"] == "M" and record["result"]["sex_source"] == "dicom"
    assert record["chronological_age_months"] == 120.0 and record["image_media_type"] == "application/dicom"
    assert client.get(record["links"]["image"]).status_code == 200


@pytest.mark.realdata
def test_real_radiograph_matches_the_assessment_function(tmp_path, rsna512):
    """The default model through the service gives what ``boneage.api.assess`` gives on the same file."""
    from boneage.api import Assessor

    path = rsna512 / "images" / "1437.png"
    predictor = Assessor()
    expected = predictor.assess(path, sex="F", age=130)
    with ThreadServer(tmp_path / "data", model=predictor) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        response = post(client, path.read_bytes(), filename="1437.png", sex="F", chronological_age_months=130)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["bone_age_months"] == pytest.approx(expected.bone_age_months, abs=0.01)
    assert record["sds"] == pytest.approx(expected.sds, abs=0.001)
    assert abs(record["bone_age_months"] - 136) < 24  # the RSNA label is 136 months


# ---------------------------------------------------------------------------------------- decisions
def test_decisions_are_stored_beside_the_model_result(client):
    record = post(client, phantom_png(90, "M"), sex="M", chronological_age_months=96).json()
    url = record["links"]["decision"]
    accepted = client.post(url, json={"decision": "accepted", "reader": "Dr R"})
    assert accepted.status_code == 201 and accepted.json()["latest_decision"]["decision"] == "accepted"
    corrected = client.post(url, json={"decision": "corrected", "reader_bone_age_months": 101.5,
                                       "comment": "carpals look older", "reader": "Dr R"}).json()
    assert [d["decision"] for d in corrected["decisions"]] == ["accepted", "corrected"]
    latest = corrected["latest_decision"]
    assert latest["reader_bone_age_months"] == 101.5 and latest["comment"] == "carpals look older"
    assert corrected["bone_age_months"] == record["bone_age_months"]  # the model's result is unchanged
    listed = client.get("/api/assessments", params={"limit": 200}).json()["items"]
    assert next(i for i in listed if i["id"] == record["id"])["latest_decision"]["decision"] == "corrected"

    bad = client.post(url, json={"decision": "corrected"})
    assert bad.status_code == 422 and "reader_bone_age_months" in one_line_detail(bad)
    assert client.post(url, json={"decision": "maybe"}).status_code == 422
    assert client.post(url, json={"decision": "corrected", "reader_bone_age_months": 500}).status_code == 422
    for body in ('{"decision": "corrected", "reader_bone_age_months": NaN}',
                 '{"decision": "corrected", "reader_bone_age_months": 1e999}', "not json", '["decision"]'):
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
        one_line_detail(response)
    missing = client.post("/api/assessments/00000000-0000-0000-0000-000000000000/decision", json={"decision": "accepted"})
    assert missing.status_code == 404 and "no assessment" in one_line_detail(missing)


# ------------------------------------------------------------------------------------------ refusals
def test_bad_fields_get_422_with_one_line(client):
    image = phantom_png()
    cases = [
        ({"sex": "X"}, "sex must be M or F"),
        ({}, "sex is required"),
        ({"sex": "F", "chronological_age_months": "300"}, "above 240 months"),
        ({"sex": "F", "chronological_age_months": "99999999999999999999"}, "above 240 months"),
        ({"sex": "F", "chronological_age_months": "nan"}, "not understood"),
        ({"sex": "F", "height_cm": "nan"}, "height_cm must be between"),
        ({"sex": "F", "height_cm": "1e400"}, "height_cm must be between"),
        ({"sex": "F", "chronological_age_months": "ten"}, "not understood"),
        ({"sex": "F", "chronological_age_months": "-5"}, "negative"),
        ({"sex": "F", "height_cm": "900"}, "height_cm must be between"),
        ({"sex": "F", "height_cm": "tall"}, "height_cm must be a number"),
    ]
    for fields, expected in cases:
        response = post(client, image, **fields)
        assert response.status_code == 422, (fields, response.text)
        assert expected in one_line_detail(response), (fields, response.text)
        assert "--sex" not in response.text  # the command line's advice is not the service's
    no_image = client.post("/api/assessments", data={"sex": "F"})
    assert no_image.status_code == 422 and one_line_detail(no_image) == "image: is required"


def pydicom_without_pixels(path):
    """A DICOM file with patient tags but no pixel data (a report, say)."""
    import pydicom

    make_dicom(path, np.zeros((16, 16), np.uint16), sex="F")
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)
    return path


def test_files_that_are_not_usable_images(client, server, tmp_path):
    before = server.store.count()
    not_image = post(client, b"name,age\nJane,9\n", filename="hand.png", sex="F")
    assert not_image.status_code == 415 and "not a PNG, JPEG, TIFF or DICOM" in one_line_detail(not_image)
    truncated = post(client, phantom_png()[:300], filename="cut.png", sex="F")
    assert truncated.status_code == 422 and one_line_detail(truncated).startswith("cut.png: cannot decode")
    assert "/tmp" not in truncated.text and "boneage-upload" not in truncated.text
    no_pixels = pydicom_without_pixels(tmp_path / "empty.dcm")
    refused = post(client, no_pixels.read_bytes(), filename="empty.dcm", media_type="application/dicom")
    assert refused.status_code == 422 and one_line_detail(refused) == "empty.dcm: DICOM file has no pixel data (is it an image?)"
    empty = post(client, b"", sex="F")
    assert empty.status_code == 422
    assert server.store.count() == before  # nothing that could not be read is stored

    blank = post(client, png_bytes(np.full((300, 300), 128, np.uint8)), filename="blank.png", sex="F",
                 chronological_age_months=100)
    assert blank.status_code == 422
    detail = one_line_detail(blank)
    assert detail.startswith("the image was rejected: blank.png: image is blank"), detail
    stored = client.get(f"/api/assessments/{blank.json()['id']}").json()  # kept, with its input, as rejected
    assert stored["status"] == "rejected" and stored["bone_age_months"] is None
    assert "boneage-upload" not in str(stored) and stored["result"]["evidence"]["available"] is False
    picture = client.get(stored["links"]["image"])
    assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).mode == "L"  # the image as read
    assert client.get(stored["links"]["report"]).content.startswith(b"%PDF")
    assert server.store.count() == before + 1


def test_uploads_above_the_limit_get_413(client):
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, (1100, 1100), dtype=np.uint8))
    assert len(noise) > 1024 * 1024
    too_big = post(client, noise, sex="F")
    assert too_big.status_code == 413 and one_line_detail(too_big) == "the upload is larger than the 1 MB limit"

    # without a Content-Length (chunked), the body is counted as it arrives
    boundary = "testboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nF\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + noise + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    chunked = client.post("/api/assessments", content=chunks(),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert chunked.status_code == 413 and "1 MB limit" in one_line_detail(chunked)


def test_unknown_ids_get_404(client):
    for path in ("/api/assessments/00000000-0000-0000-0000-000000000000",
                 "/api/assessments/00000000-0000-0000-0000-000000000000/image.png",
                 "/api/assessments/not-an-id/report.pdf",
                 "/api/assessments/..%2F..%2Fboneage.sqlite3/chart.png"):
        response = client.get(path)
        assert response.status_code == 404, path
        one_line_detail(response)


def test_sniff_image_by_content():
    assert sniff_image(phantom_png()) == "png"
    assert sniff_image(b"\xff\xd8\xff\xe0" + bytes(200)) == "jpeg"
    assert sniff_image(b"II*\x00" + bytes(200)) == "tiff"
    assert sniff_image(bytes(128) + b"DICM" + bytes(10)) == "dicom"
    assert sniff_image(b"\x08\x00\x05\x00" + bytes(200), "raw.dcm") == "dicom"
    assert sniff_image(b"\x08\x00\x05\x00" + bytes(200), "raw.png") is None
    assert sniff_image(b"GIF89a" + bytes(200), "hand.png") is None


# ---------------------------------------------------------------------------------- token and logs
def test_api_token_is_required_except_for_health(tiny_model_dir, tmp_path):
    token = "s3cret-token"
    with ThreadServer(tmp_path / "data", model=tiny_model_dir, api_token=token) as running, \
            httpx.Client(base_url=running.url, timeout=60) as client:
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json()["auth_required"] is True
        assert client.get("/").status_code == 200  # the UI page itself holds no data
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
            response = client.get("/api/assessments", headers=headers)
            assert response.status_code == 401, headers
            assert "API token" in one_line_detail(response) and response.headers["www-authenticate"] == "Bearer"
        refused = post(client, phantom_png(), sex="F")
        assert refused.status_code == 401 and running.store.count() == 0
        good = {"Authorization": f"Bearer {token}"}
        created = post(client, phantom_png(), sex="F", headers=good)
        assert created.status_code == 201
        assert client.get(created.json()["links"]["image"]).status_code == 401
        assert client.get(created.json()["links"]["image"], headers=good).status_code == 200
        assert client.get("/api/assessments", headers=good).json()["total"] == 1


def test_cross_site_posts_are_refused(client, server):
    before = server.store.count()
    response = post(client, phantom_png(), sex="F", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-site" in one_line_detail(response)
    assert post(client, phantom_png(), sex="F", headers={"Origin": server.url}).status_code == 201
    assert server.store.count() == before + 1


def test_logs_hold_no_patient_data(client, tmp_path, caplog):
    from boneage.data import hand_phantom

    pixels = hand_phantom(150, "F", size=200, rng=np.random.default_rng(5)).astype(np.uint16) * 16
    path = make_dicom(tmp_path / "x.dcm", pixels, sex="F", age="012Y")
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate = PATIENT_NAME, "PID-424242", "20140105"
    dataset.save_as(path)
    with caplog.at_level(logging.DEBUG):
        response = post(client, path.read_bytes(), filename=UPLOAD_NAME, media_type="application/dicom",
                        chronological_age_months=151, height_cm=152.5)
        assert response.status_code == 201, response.text
        record = response.json()
        client.post(record["links"]["decision"], json={"decision": "corrected", "reader_bone_age_months": 160,
                                                        "comment": "Jane's carpals", "reader": "Dr Who"})
        client.get(record["links"]["report"])
        post(client, path.read_bytes()[:400], filename=UPLOAD_NAME, sex="F")  # an unreadable one
    assert record["result"]["patient"]["name"] == PATIENT_NAME  # kept in the record, for the report
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert record["id"] in text  # the log does say what happened
    text = re.sub(r"\b[0-9a-f-]{16,}\b", "<id>", text)  # ids and hashes: hex digits may spell "151" by chance
    for secret in ("Doe", "Jane", "PID-424242", "20140105", "151", "152.5", "Dr Who", "female"):
        assert secret not in text, secret


def test_concurrent_uploads_are_all_stored(client, server):
    before = server.store.count()
    results, lock = [], threading.Lock()

    def worker(k):
        with httpx.Client(base_url=server.url, timeout=120) as own:
            response = post(own, phantom_png(60 + 10 * k, "M", seed=100 + k), filename=f"c{k}.png", sex="M")
        with lock:
            results.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 6
    assert server.store.count() == before + 6


# ----------------------------------------------------------------------------------- the real command
def test_serve_needs_a_data_dir(monkeypatch, capsys, tmp_path):
    from boneage.cli import main

    monkeypatch.delenv("BONEAGE_DATA_DIR", raising=False)
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == "boneage serve: error: no data directory: pass --data-dir DIR or set BONEAGE_DATA_DIR"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["serve", "--data-dir", str(a_file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"boneage serve: error: cannot use {a_file} as the data directory") and error.count("\n") == 1


def test_serve_checks_its_port(capsys):
    from boneage.cli import main

    for port in ("70000", "0", "http"):
        with pytest.raises(SystemExit) as stop:
            main(["serve", "--data-dir", "unused", "--port", port])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and "port must be" in error and error.count("\n") == 1, error


def test_the_service_binds_loopback_by_default():
    import inspect

    from boneage.cli import build_parser
    from boneage.service.app import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


@pytest.mark.slow
def test_boneage_serve_restart_keeps_every_record(tiny_model_dir, tmp_path):
    """``boneage serve`` (data dir from BONEAGE_DATA_DIR), stopped with Ctrl+C and started again."""
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    env = {"BONEAGE_DATA_DIR": str(data_dir), "BONEAGE_API_TOKEN": "tok", "OMP_NUM_THREADS": "1"}
    good = {"Authorization": "Bearer tok"}
    process, url = start_cli_server(["--model", str(tiny_model_dir)], env=env, log_path=log)
    try:
        with httpx.Client(base_url=url, timeout=60, headers=good) as client:
            assert client.get("/api/assessments", headers={"Authorization": ""}).status_code == 401
            rebound = client.get("/api/health", headers={"Host": "rebind.example"})  # DNS rebinding
            assert rebound.status_code == 400
            created = [post(client, phantom_png(80 + 20 * k, "F", seed=k), filename=f"r{k}.png", sex="F",
                            chronological_age_months=100 + k).json() for k in range(3)]
            rejected = post(client, png_bytes(np.zeros((200, 200), np.uint8)), filename="black.png", sex="M")
            assert rejected.status_code == 422
            client.post(created[0]["links"]["decision"], json={"decision": "corrected",
                                                               "reader_bone_age_months": 99, "comment": "ok"})
            before = client.get("/api/assessments", params={"limit": 200}).json()
    finally:
        assert stop_cli_server(process) == 0
    assert before["total"] == 4

    process, url = start_cli_server(["--model", str(tiny_model_dir)], env=env, log_path=log)
    try:
        with httpx.Client(base_url=url, timeout=60, headers=good) as client:
            after = client.get("/api/assessments", params={"limit": 200}).json()
            assert after == before
            for item in after["items"]:
                full = client.get(item["links"]["self"]).json()
                assert client.get(item["links"]["image"]).status_code == 200
                if item["id"] == created[0]["id"]:
                    assert full["latest_decision"]["reader_bone_age_months"] == 99
                    assert full["bone_age_months"] == created[0]["bone_age_months"]
    finally:
        assert stop_cli_server(process) == 0
    server_log = log.read_text()
    assert "Application startup complete" in server_log
    assert "r0.png" not in server_log and "black.png" not in server_log


# ---------------------------------------------------------------- pictures at the radiograph's resolution
def _pdf_image_sizes(pdf: bytes) -> list[tuple[int, int]]:
    return [(int(w), int(h)) for w, h in re.findall(rb"/Subtype\s*/Image\s*/Width\s+(\d+)\s*/Height\s+(\d+)", pdf)]


def test_picture_and_report_show_the_radiograph_at_its_own_resolution(client):
    """image.png is the evidence overlay on the whole radiograph as uploaded (not the model's square input),
    and the PDF report embeds it at that size."""
    from boneage.data import hand_phantom

    hand = np.pad(hand_phantom(130, "F", size=256, rng=np.random.default_rng(5)), ((0, 0), (32, 32)))  # 320 x 256
    response = post(client, png_bytes(hand), filename="wide.png", sex="F", chronological_age_months=120)
    assert response.status_code == 201, response.text
    record = response.json()
    overlay = Image.open(io.BytesIO(client.get(record["links"]["image"]).content))
    assert overlay.size == (320, 256) and overlay.mode == "RGB"
    report = client.get(record["links"]["report"]).content
    # page 1 the overlay, page 2 the radiograph without it, both at the radiograph's own size
    assert _pdf_image_sizes(report) == [(320, 256), (320, 256)] and report.count(b"/Type /Page\n") + report.count(
        b"/Type /Page ") >= 2


def test_a_large_rejected_image_is_shown_as_it_is_downscaled_to_fit(client):
    response = post(client, png_bytes(np.full((1300, 1100), 230, np.uint8)), filename="white.png", sex="F")
    assert response.status_code == 422
    record = client.get(f"/api/assessments/{response.json()['id']}").json()
    picture = np.asarray(Image.open(io.BytesIO(client.get(record["links"]["image"]).content)))
    assert picture.shape == (1024, 866) and np.all(picture == 230)  # its own grey, not black; long side 1024
    report = client.get(record["links"]["report"]).content
    assert _pdf_image_sizes(report) == [(866, 1024)]


# ------------------------------------------------------------------------------ temporary files
def test_the_service_writes_no_temporary_files_of_its_own_outside_its_data_directory():
    """Renders, stored images and the outbox go through utils.atomic_write (a temporary file beside the
    target, in the data directory); nothing in the service asks the system for a temporary file (the server
    points the spooling of large uploads into <data>/uploads: see the test below)."""
    from pathlib import Path

    import boneage.service

    offending = [f"{path.name}: {word}" for path in Path(boneage.service.__file__).parent.rglob("*.py")
                 for word in ("mkstemp", "mkdtemp", "TemporaryDirectory", "TemporaryFile(", "gettempdir", "/tmp")
                 if word in path.read_text()]
    assert offending == []


def test_stale_temporary_renders_are_removed_on_start(tiny_model_dir, tmp_path):
    import os
    import time

    from boneage.service.app import create_app

    renders = tmp_path / "data" / "renders"
    renders.mkdir(parents=True)
    stale, young, render = renders / ".a.png.1-2-deadbeef.tmp", renders / ".b.png.1-2-cafebabe.tmp", renders / "a.png"
    for path in (stale, young, render):
        path.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))  # left by a process killed two hours ago
    app = create_app(tmp_path / "data", model=tiny_model_dir)
    app.state.service.close()
    assert not stale.exists() and young.exists() and render.exists()  # a young one may be another process's


def test_large_uploads_spool_inside_the_data_folder_and_leftovers_are_removed(tmp_path, monkeypatch):
    """An upload above Starlette's 1 MB spooling limit goes to a temporary file: in <data>/uploads, which
    the server empties when it starts (a killed server's upload in flight does not stay for ever)."""
    import tempfile

    from boneage.service.config import spool_uploads_into

    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # restored after the test
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "tmpabc123").write_bytes(b"half an upload")
    folder = spool_uploads_into(tmp_path)
    assert folder == tmp_path / "uploads" and list(folder.iterdir()) == []
    with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
        spooled.write(b"x" * 100)  # rolls over to disk (an unnamed file on Linux: find it by its descriptor)
        assert os.readlink(f"/proc/self/fd/{spooled.fileno()}").startswith(str(folder))
