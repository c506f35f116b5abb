"""Images in [0, 1] are normalised inside the model; batches of one size are stacked."""

from __future__ import annotations

import pytest
import torch

from seglab.errors import UserError
from seglab.models.inputs import IMAGENET_MEAN, IMAGENET_STD, Normalize, stack_images


def test_three_channels_use_imagenet_statistics_others_half_and_a_quarter():
    image = torch.rand(2, 3, 4, 5)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(3)(image), (image - mean) / std)
    grey = torch.rand(2, 1, 4, 5)
    torch.testing.assert_close(Normalize(1)(grey), (grey - 0.5) / 0.25)
    given = Normalize(2, mean=(0.1, 0.2), std=(1.0, 2.0))(torch.ones(1, 2, 1, 1))
    torch.testing.assert_close(given.flatten(), torch.tensor([0.9, 0.4]))


def test_the_statistics_are_not_saved_with_the_weights():
    """They are builder arguments: load_model rebuilds them, a model file does not hold them."""
    assert Normalize(3).state_dict() == {}


def test_statistics_of_the_wrong_length_name_the_model():
    with pytest.raises(UserError, match="^unet: mean and std need 1 values"):
        Normalize(1, mean=IMAGENET_MEAN, model_name="unet")


def test_images_of_one_size_are_stacked_and_a_tensor_passes():
    images = [torch.rand(3, 4, 5), torch.rand(3, 4, 5)]
    batch = stack_images(images, "cnn")
    assert batch.shape == (2, 3, 4, 5) and torch.equal(batch[1], images[1])
    assert stack_images(images[0], "cnn").shape == (1, 3, 4, 5)
    assert stack_images(batch, "cnn") is batch


def test_images_of_different_sizes_cannot_be_stacked():
    with pytest.raises(UserError, match=r"^cnn: images of one batch must share one size"):
        stack_images([torch.rand(3, 4, 5), torch.rand(3, 5, 4)], "cnn")
