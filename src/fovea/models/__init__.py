from fovea.models import vmamba  # noqa: F401
