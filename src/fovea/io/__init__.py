"""Image and video reading/writing: every image becomes (H, W, 3) uint8 RGB the same way."""

from fovea.io.image import (
    IMAGE_EXTENSIONS,
    ImageList,
    apply_exif_orientation,
    image_header_size,
    list_images,
    read_image,
    read_mask,
    read_or_skip,
    to_rgb_uint8,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageList",
    "apply_exif_orientation",
    "image_header_size",
    "list_images",
    "read_image",
    "read_mask",
    "read_or_skip",
    "to_rgb_uint8",
    "write_image",
]
