"""The worked example of docs/extending.md, run as written: a new format plugs in from outside."""

from __future__ import annotations

import numpy as np
import pytest

from docs_code import doc_module, forget_module

from raydsconv import convert, open_dataset
from raydsconv.formats import FORMATS
from raydsconv.testing import FormatConformance


@pytest.fixture(scope="module")
def npz_format():
    module = doc_module("npz_format", "class NpzShardWriter")
    yield module
    forget_module(module)
    FORMATS.pop("npz", None)


@pytest.mark.usefixtures("ray_session")
def test_the_documented_format_converts_and_reads_back(npz_format, small_folder, tmp_path):
    convert(small_folder, tmp_path / "both", format=["npz", "memmap"], shape=(10, 12), images_per_file=6,
            progress=False)
    ours, theirs = open_dataset(tmp_path / "both", format="npz"), open_dataset(tmp_path / "both", format="memmap")
    assert len(ours) == len(theirs) > 0
    for i in range(len(ours)):
        assert ours[i][1] == theirs[i][1]
        assert np.array_equal(np.asarray(ours[i][0]), np.asarray(theirs[i][0]))
    assert sorted(p.name for p in (tmp_path / "both" / "npz").glob("shard-*.npz"))[0] == "shard-00000.npz"


@pytest.mark.usefixtures("ray_session")
class TestTheDocumentedFormatConforms(FormatConformance):
    """The shipped conformance suite, as a plugin's author runs it (masks: skipped, npz stores none)."""

    @pytest.fixture(scope="class")
    def format(self, npz_format):
        return "npz"
