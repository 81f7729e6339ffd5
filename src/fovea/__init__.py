"""fovea: computer-vision inspection, from a camera or a folder of images to a decision."""

__version__ = "0.1.0"
