"""The CNN classifier: shapes, parameter-count golden, overfit, round trip, losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.errors import UserError


def small_cnn(**kwargs):
    arguments = {"num_classes": 3, "widths": (8, 16), "hidden": 32, "dropout": 0.0}
    arguments.update(kwargs)
    return seglab.build_model("cnn", **arguments)


def test_forward_gives_one_logit_vector_per_image():
    model = small_cnn().eval()
    outputs = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    assert len(outputs) == 2
    assert outputs[0]["logits"].shape == (3,)
    assert model.task == "classification"


def test_any_input_size_thanks_to_global_pooling():
    model = small_cnn().eval()
    assert model(torch.rand(2, 3, 40, 56))[1]["logits"].shape == (3,)


def test_parameter_count_golden():
    # conv 3->8 (3*8*9 = 216, no bias before BN) + BN (2*8)       = 232
    # conv 8->16 (8*16*9 = 1152)                + BN (2*16)       = 1184
    # fc 16->32 (16*32 + 32 = 544), fc 32->3 (32*3 + 3 = 99)     = 643
    model = small_cnn()
    assert sum(p.numel() for p in model.parameters()) == 232 + 1184 + 643


def test_parameter_count_without_norm_has_conv_biases():
    model = small_cnn(norm="none", hidden=0)
    # 216 + 8 biases, 1152 + 16 biases, fc 16->3 = 51
    assert sum(p.numel() for p in model.parameters()) == 224 + 1168 + 51


def _batch(num_images=6, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(num_images)]
    targets = [{"labels": torch.tensor(i % 3)} for i in range(num_images)]
    return images, targets


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = small_cnn().train()
    images, targets = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        _, losses = model.forward_with_losses(images, targets)
        optimizer.zero_grad()
        losses["loss_cls"].backward()
        optimizer.step()
    assert losses["loss_cls"].item() < 0.05
    model.eval()
    predicted = [output["logits"].argmax().item() for output in model(images)]
    assert predicted == [target["labels"].item() for target in targets]


def test_save_load_round_trip_gives_equal_outputs(tmp_path):
    torch.manual_seed(0)
    model = small_cnn(activation="gelu", norm="gn", global_pool="avg")
    images, targets = _batch()
    model.train()
    model.forward_with_losses(images, targets)  # moves nothing for GN; trains nothing either
    model.eval()
    seglab.save_model(
        model, tmp_path / "m.safetensors", class_names=["circle", "square", "triangle"]
    )
    loaded = seglab.load_model(tmp_path / "m.safetensors")
    assert loaded.card.class_names == ("circle", "square", "triangle")
    assert not loaded.training
    for before, after in zip(model(images), loaded(images), strict=True):
        torch.testing.assert_close(before["logits"], after["logits"], rtol=0, atol=0)


def test_round_trip_keeps_batch_norm_statistics(tmp_path):
    model = small_cnn().train()
    model.forward_with_losses(*_batch())  # updates BatchNorm running stats
    model.eval()
    seglab.save_model(model, tmp_path / "m.safetensors")
    loaded = seglab.load_model(tmp_path / "m.safetensors")
    images, _ = _batch(seed=1)
    torch.testing.assert_close(model(images)[0]["logits"], loaded(images)[0]["logits"])


def test_eval_mode_loss_is_cross_entropy_of_the_outputs():
    model = small_cnn(dropout=0.5).eval()
    images, targets = _batch()
    outputs, losses = model.forward_with_losses(images, targets)
    logits = torch.stack([output["logits"] for output in outputs])
    labels = torch.stack([target["labels"] for target in targets])
    torch.testing.assert_close(losses["loss_cls"], F.cross_entropy(logits, labels))
    # eval mode: no dropout, so the same call gives the same loss
    torch.testing.assert_close(model.forward_with_losses(images, targets)[1]["loss_cls"],
                               losses["loss_cls"])  # fmt: skip


def test_grayscale_with_one_input_channel():
    model = small_cnn(in_channels=1).eval()
    assert model([torch.rand(1, 32, 32)])[0]["logits"].shape == (3,)
    assert model.normalize.mean.shape == (1, 1, 1, 1)


def test_wrong_number_of_channels_is_a_user_error():
    model = small_cnn(in_channels=1).eval()
    with pytest.raises(UserError, match="in_channels=3"):
        model([torch.rand(3, 32, 32)])


def test_gradients_reach_the_first_convolution():
    model = small_cnn().train()
    _, losses = model.forward_with_losses(*_batch())
    losses["loss_cls"].backward()
    first_conv = model.features[0].conv
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "tanhh"}, "activation"),
        ({"norm": "layer"}, "norm"),
        ({"widths": ()}, "widths"),
        ({"global_pool": "min"}, "global_pool"),
        ({"in_channels": 1, "mean": (0.5, 0.5, 0.5)}, "mean and std"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        small_cnn(**kwargs)


def test_unknown_argument_is_a_user_error():
    with pytest.raises(UserError, match="depthh"):
        small_cnn(depthh=3)
