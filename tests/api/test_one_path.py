"""One assessment path: a DICOM C-STORE to the node and an HTTP upload of the same file to the web service are
stored through the same function, so they store the same result, byte for byte, apart from the record's id,
its timestamp and who sent it."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from boneage.api import Assessor
from boneage.data import hand_phantom
from boneage.service import AssessmentStore
from tests.service_helpers import ThreadServer

pynetdicom = pytest.importorskip("pynetdicom")


def _dx_file(path):
    """A Digital X-Ray (for presentation) of a phantom hand with the tags a modality sends."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from boneage.service.dicom_node import DX_PRESENTATION

    pixels = hand_phantom(130, "F", 256, np.random.default_rng(3))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX_PRESENTATION, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_PRESENTATION, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Same^Hand", "P-1", "20100105", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyDate = generate_uid(), generate_uid(), "20200518"
    ds.Modality, ds.BodyPartExamined = "DX", "HAND"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", *pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def _send(ds, port: int) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="BONEAGE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_a_cstore_and_an_upload_of_the_same_file_store_the_same_result(tmp_path, tiny_model_dir):
    from boneage.service.dicom_node import DicomNode

    assessor = Assessor(tiny_model_dir)  # one loaded model, as a deployment running both would have
    ds = _dx_file(tmp_path / "hand.dcm")
    with AssessmentStore(tmp_path / "node-data") as node_store:
        node = DicomNode(assessor, node_store, port=0, send_sr=False)
        with node:
            assert _send(ds, node.port) == 0x0000
            assert node.wait_idle(30)
        [via_dicom] = node_store.list()["items"]
        via_dicom = node_store.get(via_dicom["id"])
        received = node_store.image_path(via_dicom["id"]).read_bytes()
    with ThreadServer(tmp_path / "web-data", model=assessor) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/api/assessments", files={"image": (via_dicom["image_filename"], received,
                                                                    "application/dicom")})
        assert response.status_code == 201, response.text
        via_http = server.store.get(response.json()["id"])
        uploaded = server.store.image_path(via_http["id"]).read_bytes()

    assert uploaded == received  # the same file, stored under the same hash
    assert json.dumps(via_http["result"], sort_keys=True) == json.dumps(via_dicom["result"], sort_keys=True)
    assert via_dicom["result"]["status"] == "ok" and via_dicom["result"]["chronological_age_source"] == "dicom_dates"
    differing = {key for key in via_dicom if via_dicom[key] != via_http[key]}
    assert differing <= {"id", "created_at", "source", "links"}, differing
    assert (via_dicom["source"], via_http["source"]) == ("dicom", "api")


def test_one_file_gets_one_bone_age_through_every_front_end_and_runtime(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """predict, report and the web service give the same file the same bone age: identical with one runtime,
    within 0.05 month between PyTorch and onnxruntime."""
    from PIL import Image

    from boneage.cli import main

    monkeypatch.setenv("BONEAGE_CACHE", str(tmp_path / "cache"))
    png = tmp_path / "hand.png"
    Image.fromarray(hand_phantom(130, "F", 256, np.random.default_rng(5))).save(png)
    found = {}
    for runtime in ("torch", "onnx"):
        common = ["--sex", "F", "--model", str(tiny_model_dir), "--runtime", runtime, "--json"]
        assert main(["predict", str(png), *common]) == 0
        found[("predict", runtime)] = json.loads(capsys.readouterr().out)[0]["bone_age_months"]
        assert main(["report", str(png), *common, "-o", str(tmp_path / f"{runtime}.html")]) == 0
        found[("report", runtime)] = json.loads(capsys.readouterr().out)["bone_age_months"]
        with ThreadServer(tmp_path / f"web-{runtime}", model=Assessor(tiny_model_dir, runtime=runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/api/assessments", data={"sex": "F"},
                                   files={"image": ("hand.png", png.read_bytes(), "image/png")})
            assert response.status_code == 201, response.text
            found[("service", runtime)] = response.json()["result"]["bone_age_months"]
    for runtime in ("torch", "onnx"):
        values = {found[(front, runtime)] for front in ("predict", "report", "service")}
        assert max(values) - min(values) < 1e-6, found
    assert abs(found[("predict", "torch")] - found[("predict", "onnx")]) < 0.05, found
