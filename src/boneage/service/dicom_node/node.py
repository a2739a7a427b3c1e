"""The DICOM node's Storage SCP: :class:`DicomNode` receives C-STOREs, assesses each CR or DX image with
:meth:`boneage.api.Assessor.assess`, answers with a status, and hands the results of an association to
its :class:`~.outbox.Outbox` once the association has closed."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

from ...errors import BoneAgeError, InvalidInputError, NoPixelDataError
from ..config import assessor_for
from .outbox import Outbox, Result
from .results import identity_of
from .settings import (
    ASSESSED_SOP_CLASSES,
    DX_PROCESSING,
    FOR_PROCESSING_NOTE,
    MAX_ERROR_COMMENT,
    OUTBOX_DIRNAME,
    REFUSED_SOP_CLASSES,
    STATUS,
    VERIFICATION,
    is_hand,
    parse_destination,
    safe_uid,
    validate_ae_title,
    validate_port,
)

__all__ = ["DicomNode"]

log = logging.getLogger("boneage.service.dicom")


class _Refusal(Exception):
    """A C-STORE that is answered with a failure status (not a bug). ``log_text`` is what the log says
    (default: the comment); it differs when the comment would name a patient attribute."""

    def __init__(self, status: str, comment: str, log_text: str | None = None):
        super().__init__(comment)
        self.status, self.comment = status, comment
        self.log_text = comment if log_text is None else log_text


class DicomNode:
    """A Storage SCP that assesses CR and DX hand radiographs and returns the results as DICOM.

    ``model`` is a :class:`boneage.api.Assessor` (or a Predictor, a model path, None for the shipped
    model); ``store`` an :class:`~boneage.service.store.AssessmentStore`. ``port=0`` picks a free port
    (see :attr:`port` after :meth:`start`). ``destination`` is ``(host, port, ae_title)`` or
    ``'AE@HOST:PORT'``; without one, results are only written to ``<data_dir>/outbox``. Only
    associations that call this node's AE title are accepted.
    """

    def __init__(self, model, store, ae_title: str = "BONEAGE", port: int = 11112, host: str = "127.0.0.1",
                 destination=None, *, outbox_dir: str | Path | None = None, send_sr: bool = True):
        self.assessor = assessor_for(model)
        self.store = store
        self.ae_title = validate_ae_title(ae_title)
        self.host = str(host)
        self._requested_port = validate_port(port, allow_zero=True)
        folder = Path(outbox_dir) if outbox_dir is not None else Path(store.data_dir) / OUTBOX_DIRNAME
        self.outbox = Outbox(folder, self.ae_title, parse_destination(destination), send_sr)
        self._pending: dict[int, list[Result]] = {}
        self._pending_lock = threading.Lock()
        self._server = None
        self._ae = None
        self._stopped = threading.Event()

    # -- settings kept by the outbox

    @property
    def destination(self):
        """The :class:`~.settings.Destination` results are sent to, or None."""
        return self.outbox.destination

    @property
    def outbox_dir(self) -> Path:
        return self.outbox.folder

    @property
    def send_sr(self) -> bool:
        return self.outbox.send_sr

    @send_sr.setter
    def send_sr(self, value: bool) -> None:
        self.outbox.send_sr = value

    # -- lifecycle

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when 0 was asked for)."""
        return int(self._server.server_address[1]) if self._server is not None else self._requested_port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, blocking: bool = False) -> DicomNode:
        """Listen for associations; with ``blocking`` serve until :meth:`stop` (from another thread or a
        signal handler) or Ctrl-C, then stop."""
        if self._server is not None:
            raise RuntimeError("the DICOM node is already running")
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._listen()
        self._stopped.clear()
        self.outbox.start()
        log.info("DICOM node %s listening on %s:%d (results to %s, outbox %s)", self.ae_title, self.host, self.port,
                 self.destination or "no destination", self.outbox_dir)
        if blocking:
            try:
                while not self._stopped.wait(0.5):
                    pass
            finally:
                self.stop()
        return self

    def _listen(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for sop_class in ASSESSED_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        for sop_class in REFUSED_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_CONN_CLOSE, self._handle_close)]
        try:
            server = ae.start_server((self.host, self._requested_port), block=False, evt_handlers=handlers)
        except OSError as err:
            raise InvalidInputError(f"cannot listen on {self.host}:{self._requested_port}: "
                                    f"{err.strerror or err}") from None
        self._ae, self._server = ae, server

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening, send what is still pending, and end the worker (the store stays open)."""
        self._stopped.set()
        server, self._server = self._server, None
        ae, self._ae = self._ae, None
        if server is not None:
            server.shutdown()  # no new associations
        if ae is not None:
            deadline = time.monotonic() + min(timeout, 10.0)
            while ae.active_associations and time.monotonic() < deadline:  # let running ones finish
                time.sleep(0.05)
            ae.shutdown()  # aborts any still running
        with self._pending_lock:
            leftovers, self._pending = list(self._pending.values()), {}
        for results in leftovers:
            if results:
                self.outbox.put(results)
        self.outbox.stop(timeout)
        if server is not None:
            log.info("DICOM node %s stopped", self.ae_title)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued result was written and sent; False on timeout."""
        return self.outbox.wait_idle(timeout)

    def __enter__(self) -> DicomNode:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- receiving

    def _handle_store(self, event) -> object:
        """EVT_C_STORE: assess, store, answer; never raises."""
        from pydicom.dataset import Dataset

        status = Dataset()
        sha = "unknown"
        try:
            sha, result_status, comment = self._receive(event)
            status.Status = STATUS[result_status]
            if comment:
                status.ErrorComment = comment[:MAX_ERROR_COMMENT]
        except Exception as err:  # a bug must not kill the node, nor its message leak patient data into logs
            log.error("internal error on image %s: %s (the node keeps running)", sha[:16], type(err).__name__)
            log.debug("traceback of the internal error on image %s", sha[:16], exc_info=True)
            status.Status = STATUS["internal_error"]
            status.ErrorComment = "boneage internal error; see the node's log"
        return status

    def _receive(self, event) -> tuple[str, str, str | None]:
        """-> ``(image sha256, status key, error comment)``."""
        request = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
        if sop_class not in ASSESSED_SOP_CLASSES:
            name = REFUSED_SOP_CLASSES.get(sop_class, sop_class)
            log.warning("refused a %s image from AE %r: only CR and DX radiographs are assessed", name, calling)
            return "-", "sop_class_not_supported", f"{name} is not assessed; send CR or DX"
        data = event.encoded_dataset()
        sha = hashlib.sha256(data).hexdigest()
        log.info("received image %s (%s) from AE %r", sha[:16], ASSESSED_SOP_CLASSES[sop_class], calling)
        try:
            result = self._assess(data, sha, sop_class)
        except _Refusal as refusal:
            log.warning("refused image %s (status 0x%04X): %s", sha[:16], STATUS[refusal.status], refusal.log_text)
            return sha, refusal.status, refusal.comment
        with self._pending_lock:
            self._pending.setdefault(id(event.assoc), []).append(result)
        return sha, "success", None

    def _assess(self, data: bytes, sha: str, sop_class: str) -> Result:
        """Check, assess and store one received file; raises :class:`_Refusal` for a failure status (an
        image the model refused is stored as a rejected assessment first)."""
        item = _read(data, sha)
        ds, meta = item.image.dataset, item.image.meta
        _check(ds, meta)
        for_processing = sop_class == DX_PROCESSING
        # the name the image goes by in messages, the record and the report: its SOP Instance UID when it
        # is a valid UID (nothing a sender can use to reach a path or inject text), else its hash
        sop_instance = meta.sop_instance_uid
        item.name = f"{sop_instance if safe_uid(sop_instance) else sha[:16]}.dcm"
        try:
            assessment = self.assessor.assess(item, reject=True, store=self.store, source="dicom",
                                              notes=[FOR_PROCESSING_NOTE] if for_processing else ())
        except BoneAgeError as err:
            raise _Refusal("unreadable", str(err).removeprefix(f"{item.name}: ")) from None
        record = assessment.record
        if assessment.status != "ok":
            log.info("image %s rejected by the model; assessment %s stored as rejected", sha[:16], record["id"])
            reason = (assessment.rejection or "no reason given").removeprefix(f"{item.name}: ")
            raise _Refusal("rejected", f"refused by the model: {reason}")
        log.info("image %s assessed: assessment %s stored", sha[:16], record["id"])
        return Result(record["id"], sha, assessment, identity_of(ds), sop_class, sop_instance, for_processing)

    def _handle_close(self, event) -> None:
        """EVT_CONN_CLOSE: the association that delivered images is over; queue their results."""
        with self._pending_lock:
            results = self._pending.pop(id(event.assoc), None)
        if results:
            self.outbox.put(results)


def _read(data: bytes, sha: str):
    """The received file as a :class:`~boneage.api.Radiograph`; :class:`_Refusal` when it cannot be read."""
    from ...api import read_radiograph

    provisional = f"{sha[:16]}.dcm"
    try:
        item = read_radiograph(data, name=provisional)
    except NoPixelDataError:
        raise _Refusal("missing_data", "the data set has no pixel data") from None
    except BoneAgeError as err:  # the sender needs only why, not our name for the file
        raise _Refusal("unreadable", str(err).removeprefix(f"{provisional}: ")) from None
    if item.image.dataset is None:
        raise _Refusal("unreadable", "not a DICOM data set")
    return item


def _check(ds, meta) -> None:
    """:class:`_Refusal` unless the data set may show a hand and says the patient's sex (M or F)."""
    body_part = (meta.body_part or "").strip().upper()
    if body_part and not is_hand(body_part):
        raise _Refusal("missing_data", f"BodyPartExamined {body_part[:16]} is not a hand")
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex not in ("M", "F"):
        raise _Refusal("missing_data", "PatientSex must be M or F" + (" (is O)" if sex == "O" else " (missing)"),
                       log_text="PatientSex missing or not M/F")  # the log does not say which
