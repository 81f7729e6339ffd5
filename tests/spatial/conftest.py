import pytest

from _spatial_scenes import box, make_scene


@pytest.fixture(scope="session")
def two_box_scene():
    """A crate, a tall pillar 1.2 m farther away (to the left, not hidden), a wide flat box on the right."""
    return make_scene([box(1, "crate", (0.0, 2.2), (0.4, 0.3, 0.4)),
                       box(2, "pillar", (-0.6, 3.4), (0.3, 1.0, 0.3)),
                       box(3, "flat box", (0.9, 2.6), (0.6, 0.2, 0.3))])
