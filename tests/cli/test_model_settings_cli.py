"""A bad model setting in a recipe (here the backbone's) reaches the user as one line, exit 2."""

from seglab.cli.main import main

RECIPE = """seed: 0
model: {name: faster_rcnn, num_classes: auto, backbone: resnet18, trainable_stages: 9}
data: {root: DATA, layout: coco}
train: {batch_size: 1, max_steps: 1, eval_every: 1, checkpoint_every: 1, workers: 0, device: cpu}
"""


def test_trainable_stages_out_of_range_is_a_user_error(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "shapes", str(data), "--train", "1", "--val", "1", "--size", "64"]) == 0
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.replace("DATA", str(data)))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "trainable_stages=9" in error and "0 (backbone frozen)" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
