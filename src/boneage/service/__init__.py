"""The clinical service: the assessment store (:mod:`.store`: assessments and readers' decisions), the web
service and browser UI (:mod:`.app`, ``boneage serve``) and the DICOM node (:mod:`.dicom_node`,
``boneage dicom-node``).

Importing this package is cheap: :class:`AssessmentStore` and :class:`NotFound` are loaded (with
SQLAlchemy) only when first used, so ``import boneage.service`` pulls in no database or model code.
"""

from __future__ import annotations

__all__ = ["AssessmentStore", "NotFound"]


def __getattr__(name: str):
    if name in __all__:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
