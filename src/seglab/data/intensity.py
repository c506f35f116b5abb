"""One intensity range for a whole dataset: given (`data.intensity_range`) or measured once
on the train split (`data.intensity_percentiles`).

Microscopy and medical images are often 16-bit with their useful values in a small part of
0..65535, or float in physical units (Hounsfield units, photon counts). The range maps
stored values lo..hi to 0..1 for every image alike (`seglab.data.images.load_image`), so a
value means the same in every image; a per-image min-max stretch would not. Percentiles
(as nnU-Net's 0.5 / 99.5 clip of CT intensities over the training set) are measured on the
train split's pixels; the run's config records the range they gave, so evaluation and
`seglab predict` read images exactly as training did.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from seglab.data.images import stored_pixels
from seglab.errors import UserError
from seglab.progress import progress

PIXELS_PER_IMAGE = 65536  # drawn from each training image to estimate the percentiles


def measure_intensity_range(
    dataset: Dataset, percentiles: tuple[float, float], *, seed: int = 0
) -> tuple[float, float]:
    """The `percentiles` (percent) of the stored pixel values of `dataset`'s images.

    Every image contributes all its values, or `PIXELS_PER_IMAGE` of them drawn uniformly
    (with a generator seeded by `seed` and the image's index) when it has more, so large
    images do not outweigh small ones by more than that and the result does not depend on
    the order of reading.

    Args:
        dataset: a seglab dataset (`image_path(index)`, `in_channels`), the train split.
        percentiles: `(p_lo, p_hi)` in [0, 100].

    Returns:
        `(lo, hi)` in stored values, lo < hi.
    """
    samples = []
    images = range(len(dataset))
    for index in progress(images, desc="intensity percentiles", unit="image"):
        values = stored_pixels(dataset.image_path(index), dataset.in_channels).reshape(-1)
        if values.size > PIXELS_PER_IMAGE:
            rng = np.random.default_rng([seed, index])
            values = values[rng.integers(0, values.size, PIXELS_PER_IMAGE)]
        samples.append(values.astype(np.float64))
    low, high = np.percentile(np.concatenate(samples), percentiles)
    if not low < high:
        raise UserError(
            f"data.intensity_percentiles {list(percentiles)}: both are {low:g} on the train "
            "images, which leaves no range; widen the percentiles or set data.intensity_range"
        )
    return float(low), float(high)
