"""Errors that reach users.

Every problem a user can cause (a bad file, a wrong sex value, a CSV without the needed columns, a
file that is not a boneage model) raises a subclass of :class:`BoneAgeError` whose message is a single
line that names the problem and says what to do. The CLI prints that line and exits with code 2;
a service answers 4xx with the same text.
"""


class BoneAgeError(Exception):
    """Base class of every user-facing error; ``str(err)`` is one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ImageReadError(BoneAgeError):
    """A file is missing, unreadable, or not an image we can decode."""


class NoPixelDataError(ImageReadError):
    """A DICOM file holds no image (a report, a presentation state)."""


class UnusableImageError(ImageReadError):
    """An image decodes but cannot be assessed (blank, too small)."""


class InvalidInputError(BoneAgeError):
    """An argument has a value outside what is allowed (e.g. sex other than M/F)."""


class DatasetError(BoneAgeError):
    """A label file or image folder does not have the expected layout."""


class ModelLoadError(BoneAgeError):
    """A path does not hold a boneage model, or holds one this version cannot read."""
