import torch

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
