"""The DICOM node, driven by a client no one here wrote: pynetdicom's own ``storescu`` application.

A DX radiograph made from an ``rsna-512px-samples`` image (a synthetic hand phantom when ../shared/data
is absent) is sent to the node; a Storage SCP written here plays the destination PACS and must receive a
Secondary Capture (and a Basic Text SR) in the same patient and study; the store must hold the record,
also after a restart.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from boneage.cli import main
from boneage.service.dicom_node import (
    BASIC_TEXT_SR,
    DX_PRESENTATION,
    DX_PROCESSING,
    SECONDARY_CAPTURE,
    STATUS,
    DicomNode,
    parse_destination,
)
from tests.conftest import RSNA_512

pytest.importorskip("pynetdicom")

DX = DX_PRESENTATION
CR = "1.2.840.10008.5.1.4.1.1.1"


def make_radiograph_dicom(path, pixels, *, sop_class=DX, sex="F", patient_id="BA-TEST-1437", birth="20100105",
                          study="20200518", body_part="HAND"):
    """A DX (or other SOP class) file with 8-bit MONOCHROME2 pixels and the patient and study tags a
    modality would send."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Test^Hand", patient_id, birth
    if sex is not None:
        ds.PatientSex = sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = study, "101500", "ACC0001", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT" if sop_class == SECONDARY_CAPTURE else "DX"
    if body_part:
        ds.BodyPartExamined = body_part
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PROCESSING" if sop_class == DX_PROCESSING else "FOR PRESENTATION"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def storescu(port, *files, options=()):
    """Send with pynetdicom's storescu app -> list of (file name, status) in the order sent."""
    out = subprocess.run(
        [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), *map(str, files),
         "-aec", "BONEAGE", "-v", *options],
        capture_output=True, text=True, timeout=60, check=False,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    sent = re.findall(r"Sending file: (\S+)", log)
    statuses = [int(code, 16) for code in re.findall(r"Received Store Response \(Status: 0x([0-9A-F]{4})", log)]
    assert len(statuses) == len(sent) == len(files), log
    return [(s.rsplit("/", 1)[-1], code) for s, code in zip(sent, statuses)]


class Receiver:
    """The destination PACS: a Storage SCP that keeps what it receives."""

    def __init__(self):
        from pynetdicom import AE, evt

        self.received = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title="RECEIVER")
        for sop_class in (SECONDARY_CAPTURE, BASIC_TEXT_SR):
            self.ae.add_supported_context(sop_class)
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def wait_for(self, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"the destination received {len(self.received)} object(s), expected {count}")

    def close(self):
        self.ae.shutdown()


class Env:
    def __init__(self, tmp_path, model_dir):
        from boneage.inference import Predictor
        from boneage.service.store import AssessmentStore

        self.data_dir = tmp_path / "data"
        self.predictor = Predictor(model_dir)
        self.receiver = Receiver()
        self.store = AssessmentStore(self.data_dir)
        self.node = self._node()

    def _node(self):
        node = DicomNode(self.predictor, self.store, ae_title="BONEAGE", port=0,
                         destination=("127.0.0.1", self.receiver.port, "RECEIVER"))
        return node.start()

    def restart(self):
        from boneage.service.store import AssessmentStore

        self.node.stop()
        self.store.close()
        self.store = AssessmentStore(self.data_dir)
        self.node = self._node()

    def close(self):
        self.node.stop()
        self.store.close()
        self.receiver.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    env = Env(tmp_path_factory.mktemp("dicom_node"), tiny_model_dir)
    yield env
    env.close()


def without_pixels(path):
    import pydicom

    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def hands(tmp_path_factory):
    """DX files of a girl's and a boy's hand: rsna-512px-samples 1437 and 1440, or synthetic phantoms
    when ../shared/data is absent (the node's behaviour does not depend on the model's accuracy)."""
    from PIL import Image

    from boneage.data import hand_phantom

    images = RSNA_512 / "images"
    folder = tmp_path_factory.mktemp("dicom_files")
    if (images / "1437.png").is_file() and (images / "1440.png").is_file():
        girl = np.asarray(Image.open(images / "1437.png").convert("L"))
        boy = np.asarray(Image.open(images / "1440.png").convert("L"))
    else:
        girl = hand_phantom(136, "F", size=512, rng=np.random.default_rng(1437))
        boy = hand_phantom(60, "M", size=512, rng=np.random.default_rng(1440))
    return {
        "girl": make_radiograph_dicom(folder / "girl.dcm", girl),
        "boy": make_radiograph_dicom(folder / "boy.dcm", boy, sex="M", patient_id="BA-TEST-1440",
                                     birth="20160301", study="20191010"),
        "no_sex": make_radiograph_dicom(folder / "no_sex.dcm", girl, sex=None),
        "chest": make_radiograph_dicom(folder / "chest.dcm", girl, body_part="CHEST"),
        "blank": make_radiograph_dicom(folder / "blank.dcm", np.full((256, 256), 90, np.uint8)),
        "raw": make_radiograph_dicom(folder / "raw.dcm", boy, sop_class=DX_PROCESSING, sex="M",
                                     patient_id="BA-TEST-RAW"),
        "capture": make_radiograph_dicom(folder / "capture.dcm", girl, sop_class=SECONDARY_CAPTURE),
        "no_pixels": without_pixels(make_radiograph_dicom(folder / "no_pixels.dcm", girl)),
        "other_sex": make_radiograph_dicom(folder / "other_sex.dcm", girl, sex="O"),
    }


def test_storescu_gets_success_and_the_destination_a_secondary_capture(env, hands):
    import pydicom

    before = env.store.count()
    assert storescu(env.node.port, hands["girl"]) == [("girl.dcm", 0x0000)]
    received = env.receiver.wait_for(2)
    sent = pydicom.dcmread(hands["girl"])
    by_class = {str(ds.SOPClassUID): ds for ds in received}
    capture, report = by_class[SECONDARY_CAPTURE], by_class[BASIC_TEXT_SR]
    for ds in (capture, report):
        assert ds.PatientID == sent.PatientID and ds.StudyInstanceUID == sent.StudyInstanceUID
        assert ds.PatientName == sent.PatientName and ds.PatientBirthDate == sent.PatientBirthDate
        assert ds.AccessionNumber == sent.AccessionNumber and ds.PatientSex == "F"
        assert ds.SeriesInstanceUID != sent.SeriesInstanceUID and ds.SOPInstanceUID != sent.SOPInstanceUID
        assert ds.SeriesDescription == "boneage assessment"
    assert capture.Modality == "OT" and capture.ConversionType == "WSD"
    assert capture.PhotometricInterpretation == "RGB" and capture.SamplesPerPixel == 3 and capture.BitsAllocated == 8
    assert capture.pixel_array.shape == (capture.Rows, capture.Columns, 3)
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == sent.SOPInstanceUID
    assert "Bone age" in capture.ImageComments and "supports, not replaces" in capture.ImageComments
    # the picture is the model's evidence (Grad-CAM of the tiny ResNet) and says so
    assert "Picture: evidence overlay, Grad-CAM" in capture.ImageComments
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in report.ContentSequence}
    assert "months" in texts["Bone age"] and "Chronological age" in texts  # 2010-01-05 to 2020-05-18
    assert "Grad-CAM" in texts["Visual evidence"]

    assert env.store.count() == before + 1
    record = env.store.get(env.store.list(limit=1)["items"][0]["id"])
    assert record["source"] == "dicom" and record["status"] == "ok" and record["sex"] == "F"
    assert record["result"]["source"] == f"{sent.SOPInstanceUID}.dcm" and record["result"]["evidence"]["available"]
    assert record["chronological_age_months"] == pytest.approx(124.4, abs=0.2)
    kept = pydicom.dcmread(env.store.image_path(record["id"]))  # the data set as received, with its file meta
    assert kept.SOPInstanceUID == sent.SOPInstanceUID and kept.PixelData == sent.PixelData
    assert record["result"]["patient"]["id"] == "BA-TEST-1437"
    outbox = env.data_dir / "outbox"
    assert (outbox / f"{capture.SOPInstanceUID}.dcm").is_file() and (outbox / f"{report.SOPInstanceUID}.dcm").is_file()


def test_refused_images_get_failure_statuses_and_the_node_keeps_running(env, hands):
    count = env.store.count()
    received = len(env.receiver.received)
    answers = dict(storescu(env.node.port, hands["no_sex"], hands["chest"], hands["blank"], hands["capture"],
                            hands["no_pixels"]))
    assert answers == {
        "no_sex.dcm": STATUS["missing_data"],  # 0xA900
        "chest.dcm": STATUS["missing_data"],
        "blank.dcm": STATUS["rejected"],  # 0xC001
        "capture.dcm": STATUS["sop_class_not_supported"],  # 0x0122
        "no_pixels.dcm": STATUS["missing_data"],
    }
    assert env.store.count() == count + 1  # the blank image is kept as a rejected assessment
    assert env.store.list(limit=1)["items"][0]["status"] == "rejected"
    assert storescu(env.node.port, hands["boy"]) == [("boy.dcm", 0x0000)]
    new = env.receiver.wait_for(received + 2)[received:]
    assert {ds.PatientID for ds in new} == {"BA-TEST-1440"}  # nothing came back for the refused ones


def send_one(port, path):
    """C-STORE one file with pynetdicom -> the response status Dataset (with its ErrorComment)."""
    import pydicom
    from pynetdicom import AE

    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(str(dataset.SOPClassUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="BONEAGE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()


def test_failure_statuses_say_why_and_the_logs_hold_no_patient_data(env, hands, caplog):
    import pydicom

    received = len(env.receiver.received)
    with caplog.at_level(logging.DEBUG, logger="boneage"):
        blank = send_one(env.node.port, hands["blank"])
        other = send_one(env.node.port, hands["other_sex"])
        empty = send_one(env.node.port, hands["no_pixels"])
        assert storescu(env.node.port, hands["girl"]) == [("girl.dcm", 0x0000)]
        env.receiver.wait_for(received + 2)
        assert env.node.wait_idle(30)
    assert blank.Status == STATUS["rejected"] and blank.ErrorComment.startswith("refused by the model: image is blank")
    assert other.Status == STATUS["missing_data"] and other.ErrorComment == "PatientSex must be M or F (is O)"
    assert empty.Status == STATUS["missing_data"] and "no pixel data" in empty.ErrorComment
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("boneage"))
    assert "assessment" in text and "refused image" in text  # the log does say what happened
    sent = pydicom.dcmread(hands["girl"])
    for secret in ("Test^Hand", "Test", "BA-TEST", "20100105", "20200518", "ACC0001", str(sent.SOPInstanceUID),
                   str(sent.StudyInstanceUID), "is O", "girl.dcm", "female"):
        assert secret not in text, secret


def test_dx_for_processing_is_assessed_and_says_so(env, hands):
    received = len(env.receiver.received)
    assert storescu(env.node.port, hands["raw"]) == [("raw.dcm", 0x0000)]
    capture = next(ds for ds in env.receiver.wait_for(received + 2)[received:]
                   if ds.SOPClassUID == SECONDARY_CAPTURE)
    assert "For Processing" in capture.ImageComments
    record = env.store.get(env.store.list(limit=1)["items"][0]["id"])
    assert any("For Processing" in statement for statement in record["result"]["statements"])


def test_an_internal_error_is_answered_and_survived(env, hands, monkeypatch):
    from pynetdicom import AE

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    received = len(env.receiver.received)
    monkeypatch.setattr(env.node, "_assess", broken)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(DX)
    assoc = ae.associate("127.0.0.1", env.node.port, ae_title="BONEAGE")
    assert assoc.is_established
    status = assoc.send_c_store(hands["girl"])
    assoc.release()
    assert status.Status == STATUS["internal_error"] and "internal error" in status.ErrorComment
    monkeypatch.undo()
    assert env.node.running and storescu(env.node.port, hands["girl"]) == [("girl.dcm", 0x0000)]
    env.receiver.wait_for(received + 2)


def dcmtk_storescu():
    """dcmtk's storescu (Debian package dcmtk), or None."""
    path = shutil.which("storescu")
    if path is None:
        return None
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    return path if "dcmtk" in version.lower() else None


def test_dcmtk_storescu_is_answered_too(env, hands):
    path = dcmtk_storescu()
    if path is None:
        pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")
    received = len(env.receiver.received)

    def send(file):
        out = subprocess.run([path, "-v", "-aec", "BONEAGE", "127.0.0.1", str(env.node.port), str(file)],
                             capture_output=True, text=True, timeout=60, check=False)
        return out.returncode, out.stdout + out.stderr

    code, log = send(hands["no_sex"])
    assert code != 0 and "Received Store Response (Error: DataSetDoesNotMatchSOPClass)" in log, log
    code, log = send(hands["boy"])
    assert code == 0 and "Received Store Response (Success)" in log, log
    assert {ds.PatientID for ds in env.receiver.wait_for(received + 2)[received:]} == {"BA-TEST-1440"}


def test_the_database_survives_a_restart(env):
    before = {item["id"]: item["status"] for item in env.store.list(limit=200)["items"]}
    assert len(before) >= 3
    env.restart()
    after = {item["id"]: item["status"] for item in env.store.list(limit=200)["items"]}
    assert after == before
    assert env.node.running and env.node.port > 0


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


def test_destination_and_cli_arguments_are_checked(monkeypatch, capsys):
    assert tuple(parse_destination("PACS@10.0.0.5:104")) == ("10.0.0.5", 104, "PACS")
    monkeypatch.delenv("BONEAGE_DATA_DIR", raising=False)
    for argv, expected in [
        (["--destination", "PACS:104"], "AE@HOST:PORT"),
        (["--port", "70000"], "65535"),
        (["--ae-title", "A" * 17], "16 characters"),
        ([], "BONEAGE_DATA_DIR"),
    ]:
        code = run_cli(["dicom-node", *argv])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ compressed images, the picture sent back
@pytest.mark.parametrize("syntax_name", ["JPEGLSLossless", "JPEG2000Lossless", "RLELossless"])
def test_a_compressed_radiograph_is_assessed_like_the_uncompressed_one(env, hands, tmp_path, syntax_name):
    """A PACS sends what it stores (JPEG-LS, JPEG 2000, RLE): decoded by the installed decoders, assessed, and
    the bone age is that of the same pixels sent uncompressed."""
    import pydicom
    import pydicom.uid

    from boneage.api import assess

    syntax = getattr(pydicom.uid, syntax_name)
    ds = pydicom.dcmread(hands["girl"])
    ds.compress(syntax)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / f"girl-{syntax_name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    before = len(env.receiver.received)
    # --required-contexts: propose the file's own (compressed) transfer syntax, as a PACS sending what it stores
    assert storescu(env.node.port, path, options=["--required-contexts"]) == [(path.name, 0x0000)]
    received = env.receiver.wait_for(before + 2)[before:]
    assert SECONDARY_CAPTURE in {str(item.SOPClassUID) for item in received}
    record = env.store.get(env.store.list(limit=1)["items"][0]["id"])
    assert record["status"] == "ok" and record["result"]["source"] == f"{ds.SOPInstanceUID}.dcm"
    plain = assess(hands["girl"], model=env.predictor, explain=False)
    assert record["bone_age_months"] == pytest.approx(plain.bone_age_months, abs=0.006)  # stored to 0.01


def test_secondary_capture_shows_the_radiograph_at_its_own_resolution():
    """result_picture keeps the radiograph's pixels: a picture at least 512 px wide is used as it is, a
    narrower one is widened by repeating pixels (no resampling) and centred between black margins."""
    from boneage.clinical import interpret
    from boneage.service.dicom_node import result_picture

    rng = np.random.default_rng(0)
    a = interpret(130.0, "F", chronological_age_months=125.0)
    a.model = {"name": "tiny-test", "version": "test"}
    for shape, factor in (((1024, 700), 1), ((512, 394), 1), ((120, 100), 5)):
        a.radiograph = rng.integers(0, 256, shape, dtype=np.uint8)
        picture = result_picture(a)
        expected = np.kron(a.radiograph, np.ones((factor, factor), np.uint8))
        width = max(512, expected.shape[1])
        left = (width - expected.shape[1]) // 2
        assert picture.shape[1] == width and picture.dtype == np.uint8
        shown = picture[: expected.shape[0], left : left + expected.shape[1]]
        for channel in range(3):
            np.testing.assert_array_equal(shown[..., channel], expected)
        assert picture[: expected.shape[0], :left].max(initial=0) == 0  # black margins
    overlay = rng.integers(0, 256, (512, 394, 3), dtype=np.uint8)
    a.evidence, a.evidence_label = overlay, "Grad-CAM: test"
    picture = result_picture(a)
    np.testing.assert_array_equal(picture[:512, 59:453], overlay)


@pytest.mark.parametrize("body_part", ["HAND", None])
def test_a_chest_radiograph_tagged_as_a_hand_or_untagged_is_refused(env, tmp_path, body_part):
    """The node no longer trusts BodyPartExamined: the chest CR of pydicom-data with the tag set to HAND, or
    removed, is refused by the recogniser (0xC001), stored as a rejected assessment, and nothing is sent."""
    pytest.importorskip("data_store", reason="the pydicom-data package is not installed (pip install -e '.[test]')")
    import pydicom
    from pydicom.data import get_testdata_file

    chest = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm", download=False))
    if body_part is None:
        del chest.BodyPartExamined
    else:
        chest.BodyPartExamined = body_part
    chest.PatientSex = "M"
    path = tmp_path / "chest.dcm"
    chest.save_as(path, enforce_file_format=True)
    received = len(env.receiver.received)
    reply = send_one(env.node.port, path)
    assert reply.Status == STATUS["rejected"] and "not a hand radiograph" in str(reply.ErrorComment)
    assert env.store.list(limit=1)["items"][0]["status"] == "rejected"
    env.node.wait_idle(10)
    assert len(env.receiver.received) == received
