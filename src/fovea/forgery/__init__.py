"""Image-manipulation (forgery) localisation: splicing, copy-move and inpainting, per-pixel probability."""
