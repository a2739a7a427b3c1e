"""boneage: automated skeletal bone age assessment from hand radiographs.

The package is layered like the pipeline it implements; each layer imports only those below it
(written in pyproject.toml and checked by import-linter; see docs/architecture.md)::

    cli -> service -> api -> clinical | training -> evaluation | explain -> inference
        -> models | segmentation -> artifacts -> data -> preprocess -> io -> utils -> errors

Front ends (the ``boneage`` command, the web service, the DICOM node) assess a radiograph through one
call, :meth:`boneage.api.Assessor.assess`.
"""

__version__ = "0.1.0"

from .errors import BoneAgeError  # noqa: F401
