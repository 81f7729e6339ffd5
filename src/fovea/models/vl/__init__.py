"""Vision-language models: the two-tower (image + text) model and open_clip checkpoint loading."""

from fovea.models.vl.two_tower import TwoTower, TwoTowerConfig, build_two_tower, load_two_tower, save_two_tower

__all__ = ["TwoTower", "TwoTowerConfig", "build_two_tower", "load_two_tower", "save_two_tower"]
