"""Oil-spill assessment from drone surveys: areas (m^2), Bonn-code volume ranges, severity and
response from a readable YAML, before/after comparison. See `assess`, `report`, `train`."""

from fovea.apps.oilspill.assess import (  # noqa: F401
    CLASS_NAMES, SurveyAssessment, assess_class_maps, compare_surveys, load_rules, pixel_area_map,
)
