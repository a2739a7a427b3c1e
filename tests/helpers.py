"""Test helpers shared across test modules."""

import numpy as np


def make_dicom(path, pixels, photometric="MONOCHROME2", sex="F", age="009Y", slope=None, intercept=None, window=None,
               spacing=(0.1, 0.12), preamble=True, frames=1):
    """Write an uncompressed DICOM: 2D ``pixels`` as 16-bit grayscale (``frames`` copies, the k-th
    offset by k), or ``(H, W, 3)`` uint8 as 8-bit colour in the given photometric interpretation."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientSex, ds.PatientAge = "DX", sex, age
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = list(spacing)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels.ndim == 3:
        ds.PixelData = pixels.astype(np.uint8).tobytes()
    else:
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = np.stack([pixels + k for k in range(frames)]).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return path


def dicom_with_dates(path, birth="20150101", study="20240501", age="009Y", sex="F", name="Doe^Jane"):
    """A phantom hand DICOM with birth and study dates and the patient and study fields a report shows."""
    import pydicom

    from boneage.data import hand_phantom

    make_dicom(path, hand_phantom(110, sex, 96).astype(np.uint16) * 16, sex=sex, age=age)
    ds = pydicom.dcmread(path)
    if birth:
        ds.PatientBirthDate = birth
    if study:
        ds.StudyDate = study
    ds.PatientName, ds.PatientID, ds.AccessionNumber = name, "P123", "ACC42"
    ds.StudyDescription, ds.InstitutionName = "XR HAND LEFT", "Test Hospital"
    ds.save_as(path)
    return path


def write_coco_keypoints(path, ids, points, size: int = 64, every: int = 3):
    """A COCO keypoint file (boneage's 21 hand keypoints) for the ``size`` px images ``ids``: the same
    ``points`` (21 (x, y) pairs, the left hand) on every image but each ``every``-th, left unannotated."""
    import json

    from boneage.data import KEYPOINT_NAMES

    images = [{"id": i, "width": size, "height": size, "file_name": f"{i}.png"} for i in ids]
    annotations = [{"image_id": i, "lefthand_valid": True, "righthand_valid": False,
                    "lefthand_kpts": [v for x, y in points for v in (x, y, 2)], "righthand_kpts": [0] * 63}
                   for n, i in enumerate(ids) if n % every]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"keypoints": list(KEYPOINT_NAMES)}]}))
    return path

