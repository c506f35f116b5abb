"""Proposal cache: computed once (miss, then hit), recomputed when the settings or an image
change, written whole, the same from worker processes; recall on a hand-made case."""

import json
import os
import pickle
import shutil

import numpy as np
import PIL.Image
import pytest

from seglab.data import proposals as proposals_module
from seglab.data.images import load_image
from seglab.data.proposals import (
    cache_path,
    load_proposals,
    proposal_recall,
    read_split,
)
from seglab.data.shapes import generate_shapes
from seglab.errors import UserError
from seglab.ops.selective_search import ProposalSettings, selective_search_array

SETTINGS = ProposalSettings(mode="single", max_proposals=50)


@pytest.fixture
def shapes(tmp_path):
    """6 training images of 64 px (COCO layout), written for each test: tests change it."""
    return generate_shapes(tmp_path / "shapes", train=6, val=0, size=64, seed=1)


@pytest.fixture
def searches(monkeypatch):
    """Counts the selective searches run in this process (workers=0)."""
    calls = []

    def counting(rgb, **kwargs):
        calls.append(rgb.shape)
        return selective_search_array(rgb, **kwargs)

    monkeypatch.setattr(proposals_module, "selective_search_array", counting)
    return calls


def image_ids(root):
    return list(read_split(root, "train").paths)


def load(root, ids=None, settings=SETTINGS):
    ids = image_ids(root) if ids is None else ids
    return load_proposals(root, "train", ids, settings, workers=0, progress=False)


def test_miss_computes_then_hit_reads_the_cache(shapes, searches):
    ids = image_ids(shapes)
    first = load(shapes)
    assert len(searches) == len(ids) and cache_path(shapes, "train", SETTINGS).is_file()
    second = load(shapes)
    assert len(searches) == len(ids)  # nothing computed again
    assert list(second) == ids
    for image_id, path in read_split(shapes, "train").paths.items():
        rgb = load_image(path).permute(1, 2, 0).numpy()
        expected = selective_search_array(rgb, mode="single", max_proposals=50)
        assert second[image_id].dtype == np.float32 and second[image_id].shape[1] == 4
        np.testing.assert_array_equal(second[image_id], expected)
        np.testing.assert_array_equal(first[image_id], expected)


def test_only_the_missing_images_are_computed(shapes, searches):
    ids = image_ids(shapes)
    some = load(shapes, ids[:2])
    assert list(some) == ids[:2] and len(searches) == 2
    every = load(shapes)
    assert len(searches) == len(ids)
    np.testing.assert_array_equal(every[ids[0]], some[ids[0]])
    load(shapes, ids[3:])  # a subset later: the cache keeps every image
    assert len(searches) == len(ids)


def test_other_settings_have_their_own_file(shapes, searches):
    ids = image_ids(shapes)
    load(shapes)
    other = ProposalSettings(mode="single", max_proposals=5)
    fewer = load(shapes, settings=other)
    assert len(searches) == 2 * len(ids)
    assert all(len(boxes) <= 5 for boxes in fewer.values())
    assert cache_path(shapes, "train", SETTINGS) != cache_path(shapes, "train", other)
    # A file under the right name but written for other settings is not trusted.
    shutil.copy(cache_path(shapes, "train", other), cache_path(shapes, "train", SETTINGS))
    again = load(shapes)
    assert len(searches) == 3 * len(ids)
    assert any(len(boxes) > 5 for boxes in again.values())


def test_a_changed_image_is_computed_again_a_touched_or_copied_one_is_not(
    shapes, searches, monkeypatch
):
    ids = image_ids(shapes)
    paths = read_split(shapes, "train").paths
    before = load(shapes)
    changed = paths[ids[1]]
    flipped = np.asarray(PIL.Image.open(changed))[::-1].copy()
    PIL.Image.fromarray(flipped).save(changed)
    paths[ids[2]].touch()  # new modification time, same bytes
    after = load(shapes)
    assert len(searches) == len(ids) + 1  # only the changed image
    assert not np.array_equal(after[ids[1]], before[ids[1]])
    np.testing.assert_array_equal(after[ids[2]], before[ids[2]])
    # The touched image's new time was stored: the next load does not read its bytes.
    hashed = []
    monkeypatch.setattr(proposals_module, "_digest", lambda path: hashed.append(path))
    load(shapes)
    assert hashed == [] and len(searches) == len(ids) + 1
    monkeypatch.undo()
    copy = shutil.copytree(shapes, shapes.parent / "copy", copy_function=shutil.copy)
    load(copy)  # new times everywhere, same bytes: the cache travels with the data
    assert len(searches) == len(ids) + 1


def test_changed_pixels_in_a_file_of_the_same_size_are_computed_again(shapes, searches):
    """An image rewritten with other pixels but the same byte count (uncompressed PNG) is
    not trusted: with a new modification time, nor with its old one put back (a tool that
    keeps times, a clock too coarse to tell two writes apart): its change time moved."""
    ids = image_ids(shapes)
    paths = read_split(shapes, "train").paths
    pixels = {i: np.asarray(PIL.Image.open(paths[i])) for i in ids[:2]}
    for i in ids[:2]:
        PIL.Image.fromarray(pixels[i]).save(paths[i], compress_level=0)
    before = load(shapes)
    for count, i in enumerate(ids[:2], start=1):
        old = paths[i].stat()
        PIL.Image.fromarray(pixels[i][::-1, ::-1].copy()).save(paths[i], compress_level=0)
        if count == 1:  # a time of its own, whatever the clock's resolution
            os.utime(paths[i], ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
        else:
            os.utime(paths[i], ns=(old.st_atime_ns, old.st_mtime_ns))
        new = paths[i].stat()
        assert new.st_size == old.st_size and new.st_ctime_ns != old.st_ctime_ns
        after = load(shapes)
        assert len(searches) == len(ids) + count, f"image {count}: cached proposals trusted"
        assert not np.array_equal(after[i], before[i])


def test_a_cache_file_without_change_times_is_kept(shapes, searches):
    """A cache written before change times were recorded: each image's bytes are checked
    once, nothing is computed again."""
    load(shapes)
    path = cache_path(shapes, "train", SETTINGS)
    with np.load(path) as archive:
        older = {key: archive[key] for key in archive.files if key != "ctimes_ns"}
    with open(path, "wb") as file:
        np.savez_compressed(file, **older)
    load(shapes)
    assert len(searches) == len(image_ids(shapes))
    with np.load(path) as archive:
        assert (archive["ctimes_ns"] > 0).all()  # recorded now


def test_the_cache_file_is_written_whole(shapes, searches, monkeypatch):
    path = cache_path(shapes, "train", SETTINGS)
    ids = image_ids(shapes)
    load(shapes, ids[:2])
    written = path.read_bytes()

    def fail_midway(file, **arrays):
        file.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        load(shapes)
    assert path.read_bytes() == written
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_an_interrupted_computation_keeps_what_it_computed(shapes, searches, monkeypatch):
    ids = image_ids(shapes)

    def interrupt_third(rgb, **kwargs):
        if len(searches) == 2:
            raise KeyboardInterrupt
        searches.append(rgb.shape)
        return selective_search_array(rgb, **kwargs)

    monkeypatch.setattr(proposals_module, "selective_search_array", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        load(shapes)
    monkeypatch.setattr(
        proposals_module,
        "selective_search_array",
        lambda rgb, **kwargs: searches.append(rgb.shape) or selective_search_array(rgb, **kwargs),
    )
    load(shapes)
    assert len(searches) == len(ids)  # 2 before the interruption, the rest after


def test_an_unreadable_cache_is_computed_again(shapes, searches):
    load(shapes)
    cache_path(shapes, "train", SETTINGS).write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable proposal cache"):
        load(shapes)
    assert len(searches) == 2 * len(image_ids(shapes))


def test_worker_processes_give_the_same_proposals(shapes, tmp_path):
    in_process = load(shapes)
    copy = shutil.copytree(shapes, tmp_path / "copy", ignore=shutil.ignore_patterns("proposals"))
    ids = image_ids(copy)
    pooled = load_proposals(copy, "train", ids, SETTINGS, workers=2, progress=False)
    assert list(pooled) == ids
    for image_id in ids:
        np.testing.assert_array_equal(pooled[image_id], in_process[image_id])


def test_bad_requests_are_user_errors(shapes):
    with pytest.raises(UserError, match="no image with id 999"):
        load(shapes, [999])
    with pytest.raises(UserError, match=r"test\.json: not found.*splits: train"):
        load_proposals(shapes, "test", [0], SETTINGS, workers=0, progress=False)
    first = read_split(shapes, "train").paths[image_ids(shapes)[0]]
    first.unlink()
    with pytest.raises(UserError, match=f"{first.name}: image file not found"):
        load(shapes)
    # Removed after the check, while a worker process computes: one line too (UserError
    # crosses the process boundary as it is).
    with pytest.raises(UserError, match=f"{first.name}: image file removed while"):
        proposals_module._propose_file(first, settings=SETTINGS)
    error = UserError("x")
    assert pickle.loads(pickle.dumps(error)).args == error.args


def test_read_split_gives_xyxy_ground_truth_without_crowds(tmp_path):
    (tmp_path / "train").mkdir()
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 20]},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
    ]
    coco = {
        "images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "b.png"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    split = read_split(tmp_path, "train")
    assert split.paths == {7: tmp_path / "train" / "a.png", 8: tmp_path / "train" / "b.png"}
    np.testing.assert_array_equal(split.gt_boxes[7], [[2, 3, 12, 23]])
    assert split.gt_boxes[8].shape == (0, 4)


def test_recall_counts_each_ground_truth_box_once():
    gt = {
        1: np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
        2: np.array([[0, 0, 8, 8]], np.float32),
        3: np.zeros((0, 4), np.float32),
    }
    proposals = {
        1: np.array([[0, 0, 10, 12], [20, 20, 30, 35], [50, 50, 60, 60]], np.float32),
        2: np.zeros((0, 4), np.float32),  # no proposal: its object is missed
        3: np.array([[0, 0, 4, 4]], np.float32),
    }
    # IoU 100/120 = 0.83 (found at 0.5 and 0.7), 100/150 = 0.67 (0.5 only), 0 (missed).
    recall = proposal_recall(proposals, gt, iou=(0.5, 0.7, 0.9))
    assert recall == pytest.approx({0.5: 2 / 3, 0.7: 1 / 3, 0.9: 0.0})
    assert proposal_recall(proposals, {3: gt[3]}) == {0.5: -1.0, 0.7: -1.0}
    with pytest.raises(ValueError, match="no proposals for images"):
        proposal_recall({1: proposals[1]}, gt)
