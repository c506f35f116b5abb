import json
import os
import stat

import pytest

from seglab.files import atomic_write, atomic_write_json


def test_atomic_write_json_round_trip_and_usual_mode(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "m.json", {"AP": 0.5})
    assert json.loads(path.read_text()) == {"AP": 0.5}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"old": 1})

    def crash(temporary):
        with open(temporary, "w") as handle:
            handle.write('{"half": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
