"""The application layer: the one path an image takes from any front end to an assessment.

``boneage.api.assess(radiograph, sex=..., age=..., height_cm=..., store=...)`` (or an :class:`Assessor`
holding a loaded model) validates the inputs once, reads the radiograph once, checks for a hand once,
runs the model, puts the bone age in clinical context, draws the evidence and, given a store, stores it.
The CLI, the web service and the DICOM node each parse their own input and make this one call.
"""

from .assessor import Assessor, assess, default_assessor
from .inputs import (
           Inputs,
           MissingSexError,
           Radiograph,
           read_radiograph,
           resolve_sex,
           validate_inputs,
)

__all__ = ["Assessor", "Inputs", "MissingSexError", "Radiograph", "assess", "default_assessor", "read_radiograph",
           "resolve_sex", "validate_inputs"]
