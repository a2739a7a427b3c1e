"""Reading radiographs: one interface for PNG, JPEG, TIFF and DICOM, from a file or from its bytes.

>>> image = read_image("hand.dcm")
>>> image.pixels.shape, image.meta.sex, image.meta.pixel_spacing_mm
"""

from .readers import (
    ImageMeta,
    RadiographImage,
    normalize_sex,
    read_file,
    read_image,
    read_image_bytes,
    register_reader,
    supported_suffixes,
)

__all__ = ["ImageMeta", "RadiographImage", "normalize_sex", "read_file", "read_image", "read_image_bytes",
           "register_reader", "supported_suffixes"]
