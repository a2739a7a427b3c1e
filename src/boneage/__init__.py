"""boneage: automated skeletal bone age assessment from hand radiographs.

The package is layered like the pipeline it implements::

    io -> data -> preprocess -> segmentation -> models -> training -> evaluation -> inference -> cli
"""

__version__ = "0.1.0"

from .errors import BoneAgeError  # noqa: F401
