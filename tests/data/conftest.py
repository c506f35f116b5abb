import pytest

from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory):
    """A small COCO-layout shapes dataset (96 px) with some empty images."""
    return generate_shapes(
        tmp_path_factory.mktemp("shapes_coco"), task="instance", train=40, val=8, size=96, seed=3
    )


@pytest.fixture(scope="session")
def shapes_semantic(tmp_path_factory):
    return generate_shapes(
        tmp_path_factory.mktemp("shapes_semantic"), task="semantic", train=6, val=3, size=64
    )


@pytest.fixture(scope="session")
def shapes_classify(tmp_path_factory):
    return generate_shapes(
        tmp_path_factory.mktemp("shapes_classify"), task="classify", train=12, val=6, size=64
    )
