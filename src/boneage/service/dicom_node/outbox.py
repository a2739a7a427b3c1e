"""The DICOM node's outbox: a worker thread that builds the results of assessed images (a Secondary
Capture and a Basic Text SR), writes them to the outbox folder and sends them by C-STORE to the
destination AE when there is one."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from pathlib import Path

from ...utils import atomic_write
from .results import build_secondary_capture, build_text_sr
from .settings import Destination

__all__ = ["Outbox", "Result"]

log = logging.getLogger("boneage.service.dicom")


@dataclasses.dataclass
class Result:
    """One assessed image waiting for its Secondary Capture and SR."""

    record_id: str
    image_sha256: str
    assessment: object  # boneage.clinical.Assessment
    identity: object  # pydicom Dataset with the patient and study elements of the received image
    source_sop_class: str
    source_sop_instance: str | None
    for_processing: bool


class Outbox:
    """Results written to ``folder`` and sent to ``destination`` (None: written only) as ``ae_title``, one
    batch (the images of one association) at a time, in a worker thread."""

    def __init__(self, folder: Path, ae_title: str, destination: Destination | None, send_sr: bool = True):
        self.folder, self.ae_title, self.destination, self.send_sr = folder, ae_title, destination, send_sr
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="boneage-dicom-outbox", daemon=True)
        self._worker.start()

    def put(self, results: list[Result]) -> None:
        """Queue a batch of results for writing and sending."""
        self._queue.put(results)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the worker (waiting ``timeout`` seconds at most)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout)
            if worker.is_alive():
                log.warning("the outbox worker did not finish within %.0f s", timeout)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued result was written and sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    # -- the worker

    def _work(self) -> None:
        while True:
            results = self._queue.get()
            try:
                if results is None:
                    return
                self._deliver(results)
            except Exception as err:  # never let one result stop the worker
                log.error("could not deliver results: %s", type(err).__name__)
                log.debug("traceback", exc_info=True)
            finally:
                self._queue.task_done()

    def _deliver(self, results: list[Result]) -> None:
        outgoing = []
        for result in results:
            try:
                for kind, ds in self._build(result):
                    self._write(ds)
                    outgoing.append((kind, result, ds))
            except Exception as err:
                log.error("could not build the results of assessment %s: %s", result.record_id, type(err).__name__)
                log.debug("traceback", exc_info=True)
        if outgoing and self.destination is not None:
            self._send(outgoing)

    def _build(self, result: Result) -> list[tuple[str, object]]:
        """The data sets of one result: ``[(kind, dataset), ...]``."""
        datasets = [("Secondary Capture", build_secondary_capture(
            result.assessment, result.identity, source_sop_class=result.source_sop_class,
            source_sop_instance=result.source_sop_instance, for_processing=result.for_processing))]
        if self.send_sr:
            datasets.append(("Basic Text SR", build_text_sr(result.assessment, result.identity,
                                                            for_processing=result.for_processing)))
        return datasets

    def _write(self, ds) -> None:
        """Write a data set into the outbox atomically: no partial file is ever left there."""
        atomic_write(self.folder / f"{ds.SOPInstanceUID}.dcm", lambda stream: ds.save_as(stream, enforce_file_format=True))

    def _send(self, outgoing) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        destination = self.destination
        ae = AE(ae_title=self.ae_title)
        for sop_class in {ds.SOPClassUID for _, _, ds in outgoing}:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            log.error("could not associate with %s; %d result(s) stay in %s only", destination, len(outgoing),
                      self.folder)
            return
        try:
            for kind, result, ds in outgoing:
                self._send_one(assoc, kind, result, ds)
        finally:
            assoc.release()

    def _send_one(self, assoc, kind: str, result: Result, ds) -> None:
        destination = self.destination
        try:
            reply = assoc.send_c_store(ds)
            code = reply.get("Status") if reply else None
        except Exception as err:  # noqa: BLE001 - one failed send must not stop the others
            log.error("sending the %s of assessment %s to %s failed: %s", kind, result.record_id,
                      destination, type(err).__name__)
            return
        if code == 0x0000:
            log.info("sent the %s of assessment %s to %s", kind, result.record_id, destination)
        else:
            text = "no reply" if code is None else f"status 0x{int(code):04X}"
            log.error("%s refused the %s of assessment %s (%s); it stays in %s", destination, kind,
                      result.record_id, text, self.folder)
