import numpy as np
import torch
from PIL import Image

from seglab.data import DataConfig, build_dataset


def test_classification_items(shapes_classify):
    cfg = DataConfig(root=str(shapes_classify), layout="folders", image_size=32)
    dataset = build_dataset(cfg, "val", task="classification", train=False)
    assert dataset.task == "classification" and len(dataset) == 6
    assert dataset.class_names == ["circle", "square", "triangle"]
    labels = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and target["labels"].dim() == 0
        labels.append(int(target["labels"]))
        path, label = dataset.samples[index]
        assert path.parent.name == dataset.class_names[label]
    assert set(labels) <= {0, 1, 2}


def test_training_pipeline_resizes_to_a_square(shapes_classify):
    cfg = DataConfig(
        root=str(shapes_classify),
        layout="folders",
        image_size=48,
        scale_jitter=(0.7, 1.3),
        rot90=True,
        photometric=True,
    )
    dataset = build_dataset(cfg, "train", task="classification", train=True)
    image, _ = dataset[0]
    assert image.shape == (3, 48, 48) and 0 <= image.min() and image.max() <= 1


def test_labels_agree_across_splits_when_one_lacks_a_class(tmp_path):
    for split, classes in (("train", ["ant", "bee", "cat"]), ("val", ["bee", "cat"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
                tmp_path / split / name / "x.png"
            )
    cfg = DataConfig(root=str(tmp_path), layout="folders", image_size=8)
    val = build_dataset(cfg, "val", task="classification", train=False)
    assert val.class_names == ["ant", "bee", "cat"]
    assert [int(val[i][1]["labels"]) for i in range(len(val))] == [1, 2]
