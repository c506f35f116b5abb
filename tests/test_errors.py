"""UserError stays one line, also raised again from a data-loading worker; file helpers."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from seglab.errors import UserError, read_json, require_file


class BrokenImage(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise UserError("data/train/a.png: not an image; remove or replace the file")


def test_a_user_error_raised_in_a_loader_worker_keeps_its_own_line():
    with pytest.raises(UserError) as error:
        next(iter(DataLoader(BrokenImage(), num_workers=1)))
    # torch raises it again as UserError("Caught UserError in DataLoader worker ... Traceback")
    assert str(error.value) == "data/train/a.png: not an image; remove or replace the file"


def test_an_ordinary_message_is_kept_as_given():
    assert str(UserError("a.json: malformed")) == "a.json: malformed"
    assert UserError("x", 2).args == ("x", 2)


def test_require_file_names_what_is_missing(tmp_path):
    assert require_file(tmp_path) == tmp_path
    with pytest.raises(UserError, match=r"nope\.json: model file not found"):
        require_file(tmp_path / "nope.json", "model file")


def test_read_json_decodes_or_names_the_file(tmp_path):
    (tmp_path / "good.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "good.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(UserError, match=r"bad\.json: malformed JSON .*; fix or regenerate"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(UserError, match=r"latin1\.json: malformed JSON"):
        read_json(tmp_path / "latin1.json")
    with pytest.raises(UserError, match="COCO file not found"):
        read_json(tmp_path / "missing.json", "COCO file")
