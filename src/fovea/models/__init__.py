from fovea.models import sparx, sparx_swin, vmamba  # noqa: F401  (importing registers the timm entrypoints)
