"""The one assessment path: a radiograph in, the whole assessment out, stored when a store is given.

:meth:`Assessor.assess` checks the inputs once, reads the radiograph once, resolves the sex, runs the
model's preprocessing (the hand check and clean-up included), the model and its evidence under one lock
(the model serves one image at a time, whatever the number of callers), puts the bone age in clinical
context (:func:`boneage.clinical.interpret`) and, given an
:class:`~boneage.service.store.AssessmentStore`-like ``store``, stores it with its image. The CLI
(``predict``, ``report``), the web service and the DICOM node all call it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from ..clinical import (
    Assessment,
    chronological_age,
    interpret,
    patient_fields,
    study_fields,
)
from ..clinical.assessment import RUS_CHN_SCALE, SEX_WORDS
from ..errors import BoneAgeError, ImageReadError
from ..evaluation.calibration import calibrated_interval, calibration_of, describe_calibration
from ..explain import Evidence, display_image, explain_image
from ..inference import Predictor
from ..preprocess import Prepared
from ..utils import LoadedOnce, format_months
from .inputs import Inputs, Radiograph, read_radiograph, resolve_sex, validate_inputs

__all__ = ["Assessor", "assess", "default_assessor"]

log = logging.getLogger("boneage.api")
INTERVAL_Z = 1.96  # the uncalibrated fallback: bone age +/- 1.96 member SD (a normal spread's 95%)


class Assessor:
    """A loaded model (a :class:`~boneage.inference.Predictor`, a model path, or None for the shipped
    model) and the lock that serialises its use. ``check_hand=False`` assesses images where no hand is
    found (research use); ``runtime`` is the :class:`~boneage.inference.Predictor`'s."""

    def __init__(self, model: Predictor | str | Path | None = None, *, threads: int | None = None,
                 check_hand: bool = True, runtime: str = "torch"):
        self.predictor = model if isinstance(model, Predictor) else Predictor(model, threads=threads,
                                                                             check_hand=check_hand, runtime=runtime)
        self.lock = threading.Lock()
        loaded = self.predictor.loaded
        self.model_info = {"name": loaded.name, "version": loaded.version,
                           "validation_mae_months": loaded.validation_mae}
        # checked once, here: a malformed calibration is refused when the model is loaded, not at its first image
        self.calibration = calibration_of(loaded.config, getattr(loaded, "source", None) or loaded.name)

    # ------------------------------------------------------------------------------------ one image
    def assess(self, radiograph, *, sex=None, age=None, height_cm=None, inputs: Inputs | None = None,
               name: str | None = None, explain: bool = True, reject: bool = False, store=None, source: str = "cli",
               notes: Iterable[str] = ()) -> Assessment:
        """Assess one radiograph: a path, the bytes of a file, a read image or a :class:`Radiograph`.

        ``sex`` (M/F; default: the DICOM PatientSex), ``age`` (chronological, in months or text such as
        ``'9y4m'``; default: the DICOM birth and study dates, else Patient's Age) and ``height_cm`` are
        checked first, unless a front end that parsed its own form gives them checked (``inputs``, from
        :func:`~boneage.api.validate_inputs`). ``name`` names the image in messages (default: its path). ``explain`` draws the
        model's evidence on the radiograph. An image the model refuses (blank, too small, no hand)
        raises, or with ``reject`` gives an Assessment with ``status='rejected'`` saying why; a file
        that cannot be read and bad input always raise a one-line BoneAgeError. ``notes`` are added to
        the statements. With ``store`` the assessment is stored with its image (``source``: who sent
        it, ``'cli'``, ``'api'``, ``'ui'`` or ``'dicom'``) and the record is ``Assessment.record``.
        """
        inputs = inputs if inputs is not None else validate_inputs(sex, age, height_cm)
        item = read_radiograph(radiograph, name)
        assessment = self._assess(item, inputs, explain=explain, reject=reject)
        assessment.statements.extend(notes)
        if store is not None:
            assessment.record = self.store(store, item, assessment, source)
        return assessment

    def store(self, store, item: Radiograph, assessment: Assessment, source: str) -> dict:
        """Store an assessment with the radiograph's file; returns the record."""
        if item.data is None:
            raise ImageReadError(f"{item.name}: only an image read from a file or from bytes can be stored")
        inputs = {"sex": assessment.sex, "chronological_age_months": assessment.chronological_age_months,
                  "height_cm": assessment.height_cm}
        return store.add_assessment(item.data, item.name, item.media_type, inputs, assessment.to_dict(),
                                    self.model_info["name"], self.model_info["version"], source,
                                    image_sha256=item.sha256)

    def _assess(self, item: Radiograph, inputs: Inputs, *, explain: bool, reject: bool) -> Assessment:
        meta = item.image.meta
        sex, sex_source = resolve_sex(inputs.sex, item.image, item.name, predicted=self.predictor.predicts_sex)
        age, age_source, age_statements = chronological_age(inputs.age_months, meta)
        base = {"source": item.name, "image_sha256": item.sha256, "model": dict(self.model_info),
                "patient": patient_fields(meta), "study": study_fields(meta), "sex": sex, "sex_source": sex_source,
                "chronological_age_months": age, "chronological_age_source": age_source,
                "height_cm": inputs.height_cm, "radiograph": _safe_display(item.image.pixels)}
        try:
            with self.lock:
                prepared = self.predictor.prepare(item.image, item.name)
                results = self.predictor.run([prepared], [sex])
                sex, sex_statement, sex_probability = _sex_of(sex, sex_source, results, 0)
                found = results.bones[0] if results.bones else None
                evidence, failed = self._evidence(prepared, sex, base["radiograph"], found) if explain else (None, False)
        except ImageReadError as err:
            if not reject:
                raise
            if base["sex"] is None:  # the model never said
                base["sex_source"] = None
            return Assessment(status="rejected", rejection=str(err), **base,
                              statements=[f"The image was rejected and no bone age was estimated: {err}", *age_statements])
        result = self._interpret(float(results.months[0]), None if results.sd is None else float(results.sd[0]), sex, age,
                                 inputs.height_cm)
        result.statements[:0] = age_statements + ([sex_statement] if sex_statement else [])
        for key, value in base.items():
            setattr(result, key, value)
        result.sex, result.sex_probability = sex, sex_probability
        if found:
            _add_bones(result, found)
        if failed:
            result.statements.append("The model's visual evidence could not be drawn for this image; the radiograph is shown.")
        elif evidence is not None:
            _attach(result, evidence)
        return result

    def _interpret(self, months: float, sd: float | None, sex: str, age, height) -> Assessment:
        interval, statement = self._interval(months, sd, sex)
        result = interpret(months, sex, chronological_age_months=age, height_cm=height, interval=interval)
        if statement:
            result.statements.append(statement)
        return result

    def _interval(self, months: float, sd: float | None, sex: str) -> tuple[dict | None, str | None]:
        """The bone age's interval and the sentence saying which it is: calibrated on held-out residuals when
        the model's config has a calibration (``boneage calibrate``); else, labelled as uncalibrated, the
        bone age +/- 1.96 SD across the ensemble's members; else none."""
        calibration = self.calibration
        if calibration is not None:
            low, high = calibrated_interval(months, sex, sd, calibration)
            return ({"low_months": low, "high_months": high, "level": float(calibration["level"]), "sd_months": sd,
                     "method": f"{calibration['method']}, calibrated on {calibration['n']} held-out validation images",
                     "calibrated": True}, describe_calibration(calibration))
        if sd is None:
            return None, None
        mae = self.model_info.get("validation_mae_months")
        statement = ("The interval shown is not calibrated: this model has no calibration (see boneage calibrate), so it "
                     f"is the bone age +/- {INTERVAL_Z} SD across its ensemble members, which shows how much their "
                     "estimates disagree, not how far the reference bone age may lie"
                     + (f" (its validation MAE is {float(mae):.1f} months)." if mae is not None else "."))
        return ({"low_months": months - INTERVAL_Z * sd, "high_months": months + INTERVAL_Z * sd, "level": 0.95,
                 "sd_months": sd, "method": f"uncalibrated: {self._uncertainty_method()}", "calibrated": False}, statement)

    def _uncertainty_method(self) -> str:
        members = len(self.predictor.loaded.config.get("members") or [])
        what = f"SD across the {members} ensemble members" if members else "SD across ensemble members"
        if self.predictor.tta == "hflip":
            what += ", each averaged over the image and its mirror image (flip views)"
        return f"{what}; interval = bone age +/- {INTERVAL_Z} SD"

    def _evidence(self, prepared: Prepared, sex: str, display, bones: dict | None = None) -> tuple[Evidence | None, bool]:
        """The model's own visual evidence on the radiograph -> ``(evidence, failed)``; evidence None when
        the model offers none (``bones``: a per-bone model's results for the image, drawn without running it
        again). Evidence is an aid to the reader: a failure to draw it is logged and reported (``failed``), and
        the assessment stands. Call with the lock held."""
        try:
            male = 1.0 if sex == "M" else 0.0
            return explain_image(self.predictor.loaded, prepared, male, display=display, bones=bones), False
        except Exception as err:  # noqa: BLE001 - the bone age does not depend on it
            log.warning("the model's visual evidence could not be drawn (%s)", type(err).__name__)
            return None, True

    def picture(self, radiograph, sex: str, *, name: str = "image") -> np.ndarray:
        """What a reader is shown of a stored assessment: the model's evidence overlay on the radiograph,
        or the radiograph as read when the model offers none (or the image is refused now)."""
        item = read_radiograph(radiograph, name)
        display = display_image(item.image.pixels)
        try:
            with self.lock:
                prepared = self.predictor.prepare(item.image, item.name)
                evidence, _ = self._evidence(prepared, sex, display)
        except BoneAgeError:
            evidence = None
        return evidence.overlay if evidence is not None else display

    # ---------------------------------------------------------------------------------- many images
    def assess_files(self, paths: list[str | Path], *, sex=None, sexes: list | None = None, batch_size: int = 32,
                     explain: bool = False) -> Iterable[Assessment]:
        """Assess many files, ``batch_size`` at a time through the model (memory stays bounded for any
        number of files), in order. ``sex`` is every file's, ``sexes`` one per file (None: from the DICOM, or
        predicted). A file that cannot be used gives a rejected Assessment whose ``rejection`` says why; a bad
        sex raises before any file is read."""
        if sexes is not None and len(sexes) != len(paths):
            raise ValueError(f"{len(sexes)} sexes for {len(paths)} files")
        inputs = [validate_inputs(s) for s in sexes] if sexes is not None else [validate_inputs(sex)] * len(paths)
        for start in range(0, len(paths), batch_size):
            stop = start + batch_size
            yield from self._assess_batch(paths[start:stop], inputs[start:stop], explain)

    def _assess_batch(self, paths, inputs: list[Inputs], explain: bool) -> list[Assessment]:
        results: list[Assessment | None] = []
        ready: list[tuple[int, str, str, Radiograph, Prepared]] = []  # (position, sex, sex source, image, prepared)
        for path, given in zip(paths, inputs):
            try:
                item = read_radiograph(path)
                sex, sex_source = resolve_sex(given.sex, item.image, item.name, predicted=self.predictor.predicts_sex)
                with self.lock:
                    prepared = self.predictor.prepare(item.image, item.name)
            except BoneAgeError as err:
                results.append(Assessment(status="rejected", source=str(path), rejection=str(err)))
                continue
            ready.append((len(results), sex, sex_source, item, prepared))
            results.append(None)
        if ready:
            with self.lock:
                predicted = self.predictor.run([r[4] for r in ready], [r[1] for r in ready])
            for k, (position, sex, sex_source, item, prepared) in enumerate(ready):
                sex, sex_statement, sex_probability = _sex_of(sex, sex_source, predicted, k)
                sd = None if predicted.sd is None else float(predicted.sd[k])
                result = self._interpret(float(predicted.months[k]), sd, sex, None, None)
                if sex_statement:
                    result.statements.insert(0, sex_statement)
                result.source, result.sex, result.sex_source, result.sex_probability = item.name, sex, sex_source, sex_probability
                result.image_sha256, result.model = item.sha256, dict(self.model_info)
                found = predicted.bones[k] if predicted.bones else None
                if found:
                    _add_bones(result, found)
                if explain:
                    with self.lock:
                        evidence, _ = self._evidence(prepared, sex, display_image(item.image.pixels), found)
                    if evidence is not None:
                        _attach(result, evidence)
                results[position] = result
        return results


_DEFAULT = LoadedOnce(Assessor)


def default_assessor(model: str | Path | None = None) -> Assessor:
    """An :class:`Assessor` of ``model`` (None: the shipped one), loaded once per process and shared."""
    return _DEFAULT.get(model)


def assess(radiograph, *, model: Assessor | Predictor | str | Path | None = None, **kwargs) -> Assessment:
    """Assess one radiograph with ``model`` (an :class:`Assessor`, a Predictor, a model path, or None for the
    shipped model); the keyword arguments are those of :meth:`Assessor.assess`."""
    if isinstance(model, Assessor):
        assessor = model
    elif isinstance(model, Predictor):
        assessor = Assessor(model)
    else:
        assessor = default_assessor(model)
    return assessor.assess(radiograph, **kwargs)


SEX_WARNING_PROBABILITY = 0.95  # a model this sure of the other sex makes a given sex worth checking


def _sex_of(sex: str | None, source: str, results, k: int) -> tuple[str, str | None, float | None]:
    """The sex image ``k`` is assessed as, a statement about it (or None) and the model's probability of that sex.
    An unknown sex (None) is the one the model predicts; a given sex the model is confident is the other one is
    kept, with a warning to check it."""
    probability = None if results.sex_probability is None else float(results.sex_probability[k])
    if probability is None:
        return sex, None, None
    if sex is None:
        sex = "M" if probability >= 0.5 else "F"
        chance = probability if sex == "M" else 1.0 - probability
        return sex, (f"The sex was not given: the model predicted it from the radiograph as {SEX_WORDS[sex]} (probability "
                     f"{chance:.2f}); the reference values use it, and the bone age weighs the two sexes' by that "
                     "probability. Give the sex when it is known."), chance
    chance = probability if sex == "M" else 1.0 - probability
    if 1.0 - chance >= SEX_WARNING_PROBABILITY:
        given = "the DICOM PatientSex" if source == "dicom" else "the sex given"
        other = SEX_WORDS["F" if sex == "M" else "M"]
        return sex, (f"Check the sex: {given} is {SEX_WORDS[sex]}, but the model reads the radiograph as {other} "
                     f"(probability {1.0 - chance:.2f})."), chance
    return sex, None, chance


def _add_bones(assessment: Assessment, found: dict) -> None:
    """A per-bone model's results (one image's :meth:`~boneage.inference.Predictor.predict_bones`) on the
    assessment: its bones, the RUS-CHN summary and a sentence saying what the two bone ages are."""
    assessment.bones = found["bones"]
    assessment.rus_chn = {"total_score": found["rus_chn_score"], "age_months": found["rus_chn_age_months"],
                          "expected_total_score": found["rus_chn_expected_score"],
                          "raw_months": found["rus_chn_raw_months"], "scale": RUS_CHN_SCALE}
    assessment.statements.append(
        f"RUS-CHN: {len(found['bones'])} bones staged, total score {found['rus_chn_score']} (RUS-CHN bone age "
        f"{format_months(found['rus_chn_age_months'])}, Chinese standard); the bone age shown is its Greulich & Pyle "
        "equivalent.")


def _attach(assessment: Assessment, evidence: Evidence) -> None:
    assessment.evidence, assessment.evidence_label, assessment.evidence_kind = evidence.overlay, evidence.label, evidence.kind


def _safe_display(pixels: np.ndarray) -> np.ndarray | None:
    """A display copy of the radiograph; never stops an assessment or a rejection report."""
    try:
        return display_image(pixels)
    except Exception:  # noqa: BLE001 - e.g. a blank image the model also refuses
        return None
