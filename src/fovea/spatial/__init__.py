"""Spatial questions with metric answers (SpatialVLM-style) on fovea's geometry.

Pipeline: metric depth + intrinsics + named masks -> `lift.lift_scene` (canonical gravity frame,
per-object geometry with flags and uncertainty) -> `questions.generate_questions` (40 types defined
in `definitions`, phrased by `templates` / `language`) -> `export` (JSONL, LLaVA, pictures);
`evaluate` scores answers. `pipeline` strings these together for RGB-D frames and generated scenes
(`fovea.synth.scenes3d`). See docs/spatial.md.
"""

from fovea.spatial.definitions import TYPES
from fovea.spatial.evaluate import evaluate
from fovea.spatial.lift import LiftResult, ObjectGeometry, lift_scene
from fovea.spatial.pipeline import questions_from_frame, questions_from_scene
from fovea.spatial.questions import attach_truth, generate_questions

__all__ = ["TYPES", "LiftResult", "ObjectGeometry", "attach_truth", "evaluate", "generate_questions", "lift_scene",
           "questions_from_frame", "questions_from_scene"]
