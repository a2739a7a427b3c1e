"""Uploads to the web service: the request-size limit (an ASGI middleware answering 413), the image
kind judged by content, and the checks of one uploaded file and its form fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import HTTPException, UploadFile

__all__ = ["FORM_OVERHEAD_BYTES", "IMAGE_TYPES", "MB", "UploadLimit", "base_name", "form_field", "read_upload",
           "sniff_image"]

MB = 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small text fields
IMAGE_TYPES = {  # suffix (chooses the reader) and media type, by content
    "png": (".png", "image/png"),
    "jpeg": (".jpg", "image/jpeg"),
    "tiff": (".tif", "image/tiff"),
    "dicom": (".dcm", "application/dicom"),
}


def sniff_image(data: bytes, filename: str | None = None) -> str | None:
    """The kind of an uploaded file by its content: ``'png'``, ``'jpeg'``, ``'tiff'``, ``'dicom'`` or None.

    A DICOM file needs 'DICM' at byte 128 (Part 10), or, without the preamble, a ``.dcm``/``.dicom``
    name and a first tag in group 0002 or 0008.
    """
    head = bytes(data[:132])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    suffix = Path(filename or "").suffix.lower()
    if suffix in (".dcm", ".dicom") and head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom"
    return None


def form_field(value: str | None) -> str | None:
    """A form field with blanks treated as absent."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def base_name(filename: str | None) -> str:
    """The last part of an uploaded file's name (no folders), at most 200 characters; ``'upload'`` when none."""
    name = re.split(r"[\\/]", filename or "")[-1].strip()
    return name[:200] or "upload"


async def read_upload(image: UploadFile, max_bytes: int, too_large: str) -> bytes:
    """The bytes of an uploaded image: 413 (``too_large``) above ``max_bytes``, 422 when empty, 415 when
    its content is not a PNG, JPEG, TIFF or DICOM file."""
    data = await image.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, too_large)
    if not data:
        raise HTTPException(422, "the image file is empty")
    if sniff_image(data, image.filename) is None:
        raise HTTPException(415, "the file is not a PNG, JPEG, TIFF or DICOM image (judged by its content)")
    return data


# ---------------------------------------------------------------------------------------- middleware
class _BodyTooLarge(Exception):
    """Raised inside a request's receive channel when its body passes the limit."""


class UploadLimit:
    """Refuse request bodies above a limit with 413: at once by Content-Length, else while reading
    (whatever the inner layers make of the interrupted read, the client gets the 413)."""

    def __init__(self, app, max_bytes: int, message: str):
        self.app, self.max_bytes = app, max_bytes
        self.payload = json.dumps({"detail": message}).encode("utf-8")

    async def _refuse(self, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.payload)).encode()),
                   (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": self.payload})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received, exceeded, started = 0, False, False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # the app's answer to the interrupted read is replaced by the 413
                if not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            if not started:
                await self._refuse(send)
