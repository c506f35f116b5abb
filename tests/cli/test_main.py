import importlib.metadata
import runpy
import sys

import pytest

import seglab
from seglab.cli.main import SUBCOMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: seglab {command}" in capsys.readouterr().out


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"seglab {seglab.__version__}\n"
    assert seglab.__version__ == importlib.metadata.version("seglab")  # the installed package's


def test_python_dash_m_seglab_is_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["seglab", "eval", "--gt", "missing.json", "--pred", "p"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("seglab", run_name="__main__")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "seglab eval: error: missing.json: ground-truth file not found\n"
    )


def test_every_command_takes_quiet():
    parser = build_parser()
    for argv in (["train", "--out", "r"], ["eval", "--gt", "g", "--pred", "p"],
                 ["predict", "m", "i", "--out", "o"], ["data", "shapes", "o"]):  # fmt: skip
        assert parser.parse_args([*argv, "--quiet"]).quiet
        assert not parser.parse_args(argv).quiet


def test_a_file_system_error_while_working_is_one_line(monkeypatch, tmp_path, capsys):
    """What the up-front path checks cannot foresee (a disk that fills up while writing)."""
    import errno

    import seglab.data.shapes

    def disk_full(out, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "shapes" / "a.png"))

    monkeypatch.setattr(seglab.data.shapes, "generate_shapes_summary", disk_full)
    assert main(["data", "shapes", str(tmp_path / "shapes")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"seglab data: error: {tmp_path}/shapes/a.png: No space left on device; "
                   "free some disk space or choose another path")  # fmt: skip


def test_an_unforeseen_os_error_keeps_its_traceback(monkeypatch, tmp_path):
    """A file-system error without a path is a bug to report, not a user mistake."""
    import seglab.data.shapes

    def broken(out, **_):
        raise OSError("bad file descriptor")

    monkeypatch.setattr(seglab.data.shapes, "generate_shapes_summary", broken)
    with pytest.raises(OSError, match="bad file descriptor"):
        main(["data", "shapes", str(tmp_path / "shapes")])
