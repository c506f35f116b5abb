"""An output path on a read-only file system is refused before the work, and says so.

The file system is real: a tmpfs mounted read-only in a private mount namespace
(`unshare --mount`, as root; `--user --map-root-user` otherwise), where even root cannot
write. Where the machine allows neither, the test is skipped; the statvfs flag it relies on
is then still checked by the second test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from seglab.errors import UserError
from seglab.files import check_output_folder

COMMANDS = {  # seglab argv (OUT stands for a path under the read-only mount)
    "data shapes": ["data", "shapes", "OUT/shapes"],
    "train": ["train", "cnn_shapes", "--out", "OUT/run"],
    "eval --gt": ["eval", "--gt", "g.json", "--pred", "p.json", "--out", "OUT/m.json"],
}


def namespace_prefix() -> list[str] | None:
    """An `unshare` command line that may mount here, or None."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_read_only_file_system_is_named_before_any_work(name, tmp_path):
    prefix = namespace_prefix()
    if prefix is None:
        pytest.skip("no mount namespace here (unshare unavailable or not permitted)")
    mount = tmp_path / "ro"
    mount.mkdir()
    argv = [arg.replace("OUT", str(mount)) for arg in COMMANDS[name]]
    script = f'mount -t tmpfs -o ro,size=1m none {mount} || exit 99; exec "$0" -m seglab "$@"'
    completed = subprocess.run(
        [*prefix, "sh", "-c", script, sys.executable, *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if completed.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {completed.stderr.strip()}")
    assert completed.returncode == 2, completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"seglab {argv[0]}: error: ")
    assert f"{mount} is on a read-only file system; choose another" in line


def test_the_read_only_flag_is_read_from_statvfs(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self.f_flag = result.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real(path)))
    with pytest.raises(UserError, match="is on a read-only file system; choose another --out"):
        check_output_folder(tmp_path / "run")
