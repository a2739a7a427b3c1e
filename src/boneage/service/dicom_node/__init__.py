"""The DICOM node: a Storage SCP that assesses hand radiographs and sends the result back as DICOM.

``DicomNode(assessor, store, ae_title='BONEAGE', port=11112, destination=('127.0.0.1', 104, 'PACS'))``
listens for C-STORE requests. Each Computed Radiography or Digital X-Ray image is assessed and stored by
the one assessment path, :meth:`boneage.api.Assessor.assess` (sex from PatientSex, chronological age from
the birth and study dates, else PatientAge), in the :class:`~boneage.service.store.AssessmentStore` with
the received file's bytes (``source='dicom'``), exactly as the web service stores an upload. Once the
association that delivered the image has closed, a worker thread builds a Secondary Capture (the
radiograph, or the model's evidence overlay when the assessment has one, with the numbers burned in
below it) and a Basic Text SR with the same numbers, both in the patient and study of the received
image, writes them to ``<data_dir>/outbox/`` and sends them by C-STORE to the destination AE when one
is configured. The SCP's reply never waits for that.

C-STORE statuses (also in the README):

* ``0x0000`` assessed and stored;
* ``0x0122`` SOP class not assessed (a Secondary Capture, say: only CR and DX images are);
* ``0xA900`` the data set lacks what an assessment needs: no pixel data, PatientSex missing or other
  than M/F, or BodyPartExamined naming something other than a hand or wrist;
* ``0xC000`` the image cannot be read or decoded;
* ``0xC001`` the model refused the image (blank, too small, no hand); the refusal is stored as a
  ``'rejected'`` assessment;
* ``0xC0FF`` an internal error; it is logged and the node keeps running.

Failures carry an ErrorComment (64 characters at most) saying why. Digital X-Ray *For Processing*
images are accepted and assessed like *For Presentation* ones (the model sees percentile-windowed raw
values, which it was not validated on); the record, the Secondary Capture and the SR say so.

Log lines carry image hashes, assessment ids, AE titles and SOP class names, never patient data.
Importing this package is cheap: pydicom, pynetdicom and the model code load when a node is made.

The parts: :mod:`.settings` (AE titles, ports, the destination, SOP classes, statuses), :mod:`.results`
(the result lines and picture, the Secondary Capture and the SR), :mod:`.node` (the SCP),
:mod:`.outbox` (writing and sending the results) and :mod:`.serve` (``boneage dicom-node``).
"""

from __future__ import annotations

from .node import DicomNode
from .results import build_secondary_capture, build_text_sr, result_lines, result_picture
from .serve import serve_node
from .settings import (
    ASSESSED_SOP_CLASSES,
    BASIC_TEXT_SR,
    CR,
    DX_PRESENTATION,
    DX_PROCESSING,
    OUTBOX_DIRNAME,
    SECONDARY_CAPTURE,
    STATUS,
    Destination,
    parse_destination,
    validate_ae_title,
    validate_port,
)

__all__ = [
    "ASSESSED_SOP_CLASSES",
    "BASIC_TEXT_SR",
    "CR",
    "DX_PRESENTATION",
    "DX_PROCESSING",
    "OUTBOX_DIRNAME",
    "SECONDARY_CAPTURE",
    "STATUS",
    "Destination",
    "DicomNode",
    "build_secondary_capture",
    "build_text_sr",
    "parse_destination",
    "result_lines",
    "result_picture",
    "serve_node",
    "validate_ae_title",
    "validate_port",
]
