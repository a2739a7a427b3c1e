"""The DICOM node's settings and constants: AE titles, ports and the destination (checked), the SOP
classes it assesses, its C-STORE statuses, and what counts as a hand."""

from __future__ import annotations

import re
from typing import NamedTuple

from ...errors import InvalidInputError

__all__ = [
    "ASSESSED_SOP_CLASSES",
    "BASIC_TEXT_SR",
    "CR",
    "DX_PRESENTATION",
    "DX_PROCESSING",
    "FOR_PROCESSING_NOTE",
    "MAX_ERROR_COMMENT",
    "OUTBOX_DIRNAME",
    "REFUSED_SOP_CLASSES",
    "SECONDARY_CAPTURE",
    "STATUS",
    "VERIFICATION",
    "Destination",
    "is_hand",
    "parse_destination",
    "safe_uid",
    "validate_ae_title",
    "validate_port",
]

OUTBOX_DIRNAME = "outbox"
MAX_ERROR_COMMENT = 64

CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"  # Digital X-Ray Image Storage - For Processing
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
VERIFICATION = "1.2.840.10008.1.1"
ASSESSED_SOP_CLASSES = {
    CR: "Computed Radiography",
    DX_PRESENTATION: "Digital X-Ray For Presentation",
    DX_PROCESSING: "Digital X-Ray For Processing",
}
# accepted at association negotiation so that a sender gets a clear refusal status, not a rejected context
REFUSED_SOP_CLASSES = {SECONDARY_CAPTURE: "Secondary Capture"}

STATUS = {
    "success": 0x0000,
    "sop_class_not_supported": 0x0122,
    "missing_data": 0xA900,
    "unreadable": 0xC000,
    "rejected": 0xC001,
    "internal_error": 0xC0FF,
}
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")  # a DICOM UID: digits and dots, at most 64 characters
HAND_BODY_PARTS = ("HAND", "WRIST", "FINGER", "CARP")  # a BodyPartExamined containing one names a hand
UPPER_LIMB_BODY_PARTS = ("EXTREMITY", "UPPEREXTREMITY", "UPREXTREMITY", "UPPERLIMB", "UPRLIMB")  # vague, accepted
FOR_PROCESSING_NOTE = ("The image is a Digital X-Ray For Processing (raw detector data); it was assessed after "
                       "percentile windowing, which the model was not validated on.")


class Destination(NamedTuple):
    """Where results are sent: ``(host, port, ae_title)``."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """A DICOM AE title: 1-16 ASCII characters, no backslash or control characters, not only spaces."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise InvalidInputError(f"{what} is empty; give 1-16 characters such as BONEAGE")
    if len(text) > 16:
        raise InvalidInputError(f"{what} {text!r} is longer than 16 characters")
    if any(ord(ch) < 32 or ord(ch) > 126 or ch == "\\" for ch in text):
        raise InvalidInputError(f"{what} {text!r} may only use printable ASCII characters other than backslash")
    return text


def validate_port(value, what: str = "port", allow_zero: bool = False) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}") from None
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise InvalidInputError(f"{what} must be between {0 if allow_zero else 1} and 65535, got {port}")
    return port


def parse_destination(value) -> Destination | None:
    """``'AE@HOST:PORT'`` (or a ``(host, port, ae_title)`` tuple, or None) -> :class:`Destination`."""
    if value is None or isinstance(value, Destination):
        return value
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise InvalidInputError(f"destination must be (host, port, ae_title), got {value!r}")
        host, port, ae_title = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@]+):(\d+)", text)
        if not match:
            raise InvalidInputError(f"destination must be AE@HOST:PORT (e.g. PACS@10.0.0.5:104), got {text!r}")
        ae_title, host, port = match.group(1), match.group(2).strip("[]"), match.group(3)
    host = str(host).strip()
    if not host:
        raise InvalidInputError("destination host is empty")
    return Destination(host, validate_port(port, "destination port"), validate_ae_title(ae_title, "destination AE title"))


def is_hand(body_part: str) -> bool:
    """Whether a BodyPartExamined value may name a hand (an absent one is not checked)."""
    compact = re.sub(r"[^A-Z]", "", body_part.upper())
    return any(word in compact for word in HAND_BODY_PARTS) or compact in UPPER_LIMB_BODY_PARTS


def safe_uid(uid: str | None) -> bool:
    """Whether ``uid`` is a valid DICOM UID (digits and dots, at most 64 characters): nothing a sender
    can use to reach a path or inject text."""
    return uid is not None and len(uid) <= 64 and _UID_RE.fullmatch(uid) is not None
