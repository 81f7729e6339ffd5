from fovea.models import sparx, vmamba  # noqa: F401  (importing registers the timm entrypoints)
