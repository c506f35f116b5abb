"""The command outputs README.md and docs/ show are what the commands print now.

`scripts/doc_outputs.py` finds the shown outputs (a fenced transcript after `<!-- output -->`),
runs each `$ seglab ...` line in this process and compares, durations and rates aside; it
rewrites them when run without `--check`. Transcripts of training and timings carry
`<!-- output: run NAME -->` instead and are not run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


doc_outputs = load_script(REPO / "scripts" / "doc_outputs.py")


def test_every_shown_transcript_is_marked():
    unmarked = [block.where for block in doc_outputs.unmarked(doc_outputs.doc_files())]
    assert unmarked == [], (
        f"transcripts without <!-- output --> or <!-- output: run NAME -->: {unmarked}"
    )


def test_shown_outputs_are_what_the_commands_print_now(tmp_path):
    files = doc_outputs.doc_files()
    assert len(doc_outputs.compared(files)) >= 20  # the help texts, data summaries, errors
    stale = doc_outputs.stale_outputs(files, tmp_path)
    report = "\n".join(f"{s.block.where}: {s.command}\n{s.diff()}" for s in stale)
    assert not stale, f"stale outputs (python scripts/doc_outputs.py rewrites them):\n{report}"


def test_the_python_samples_use_seglabs_public_api():
    samples = doc_outputs.samples(doc_outputs.doc_files())
    assert len(samples) >= 2  # README's and Getting started's
    assert {b.where: doc_outputs.unknown_api_names(b) for b in samples} == {
        b.where: [] for b in samples
    }


@pytest.mark.slow  # a Mask R-CNN forward at 192 px, twice per sample: 10 s of CPU
def test_the_python_samples_run(tmp_path):
    """The fast test above checks the names they use; this one runs them."""
    failures = doc_outputs.failing_samples(doc_outputs.doc_files(), tmp_path)
    assert [f"{block.where}: {error}" for block, error in failures] == []


def test_a_sample_with_a_renamed_function_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- code -->\n```python\nimport seglab\nseglab.load_models('m')\n```\n")
    [block] = doc_outputs.samples([page])
    assert doc_outputs.unknown_api_names(block) == ["load_models"]
    assert [e for _, e in doc_outputs.failing_samples([page], tmp_path)] == [
        "AttributeError: module 'seglab' has no attribute 'load_models'"
    ]


def _page_with(tmp_path: Path, source: str, old: str, new: str) -> Path:
    """A copy of a docs page with one shown line changed (the drift a test must catch)."""
    page = tmp_path / Path(source).name
    shutil.copy(REPO / source, page)
    text = page.read_text()
    assert text.count(old) == 1, old
    page.write_text(text.replace(old, new))
    return page


def test_a_drifted_help_line_is_found_and_rewritten(tmp_path):
    page = _page_with(
        tmp_path, "docs/cli/index.md",
        "    export    export a trained model to ONNX, checked against PyTorch with\n"
        "              onnxruntime\n", "",
    )  # fmt: skip
    stale = doc_outputs.stale_outputs([page], tmp_path / "scratch")
    assert [s.command for s in stale] == ["seglab --help"]
    assert "+    export    export a trained model to ONNX" in stale[0].diff()
    doc_outputs.rewrite(stale)
    assert doc_outputs.stale_outputs([page], tmp_path / "scratch2") == []
    assert page.read_text() == (REPO / "docs/cli/index.md").read_text()


def test_a_drifted_count_is_found_but_not_a_time(tmp_path):
    """Durations and rates change from run to run; counts do not."""
    shown = re.search(r"^wrote /tmp/readme/classify .*$", (REPO / "docs/data.md").read_text(), re.M)
    command = "$ seglab data shapes /tmp/readme/classify --task classify --train 40 --val 10"
    other_time = re.sub(r"[\d.]+ s$", "99.9 s", shown[0])
    other_count = other_time.replace("50 objects", "51 objects")
    assert other_count != other_time != shown[0]
    page = tmp_path / "page.md"
    page.write_text(
        "".join(
            f"<!-- output -->\n```\n{command}\n{line}\n```\n\n"
            for line in (other_time, other_count)
        )
    )
    stale = doc_outputs.stale_outputs([page], tmp_path / "scratch")
    assert [s.shown for s in stale] == [[other_count]]


def test_an_unmarked_transcript_is_found(tmp_path):
    page = _page_with(tmp_path, "docs/cli/index.md", "<!-- output -->\n", "")
    assert [block.lines[0] for block in doc_outputs.unmarked([page])] == ["$ seglab --help"]


def test_a_misspelt_marker_is_refused(tmp_path):
    page = _page_with(tmp_path, "docs/cli/index.md", "<!-- output -->", "<!-- output: rnu x -->")
    with pytest.raises(ValueError, match="output: run NAME"):
        doc_outputs.blocks(page)


def test_the_files_the_docs_name_exist():
    """Every `path/file.py` in a docs table's file column is a file under src/seglab/."""
    missing = []
    for page in doc_outputs.doc_files():
        for row in re.findall(r"^\|.*\|\s*(.*?)\s*\|$", page.read_text(), flags=re.M):
            for path in re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", row):
                if not (REPO / "src/seglab" / path).is_file() and not (REPO / path).is_file():
                    missing.append(f"{page.relative_to(REPO)}: {path}")
    assert missing == []


def test_the_readmes_links_lead_to_files():
    """README.md is not part of the site, whose build checks every link: checked here."""
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(targets) > 20
    assert [t for t in targets if "://" not in t and not (REPO / t).exists()] == []
