"""Image classification: class-folder/CSV data, any timm backbone with a new head, fine-tune or
linear-probe with `fovea.engine.train.fit`, metrics, and one Predictor for in-process/TorchScript/ONNX."""

from fovea.classify.model import ClassifierPipeline, ClassifierRecipe, build_classifier, load_classifier
from fovea.classify.predictor import ClassifierPredictor, export_classifier, load_predictor
from fovea.classify.train import ClassificationTask, evaluate_classifier, train_classifier

__all__ = [
    "ClassificationTask",
    "ClassifierPipeline",
    "ClassifierPredictor",
    "ClassifierRecipe",
    "build_classifier",
    "evaluate_classifier",
    "export_classifier",
    "load_classifier",
    "load_predictor",
    "train_classifier",
]
