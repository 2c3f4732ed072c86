"""The codecs' own command-line tools: what a user who leaves walq would read its archive with."""

from __future__ import annotations

import shutil
import subprocess

import pytest

TOOLS = {
    "gzip": ["gzip", "-dc"],
    "bzip2": ["bzip2", "-dc"],
    "xz": ["xz", "-dc"],
    "zstd": ["zstd", "-dc"],
    "lz4": ["lz4", "-dc"],
}


def decompress_with_tool(codec: str, data: bytes) -> bytes:
    """``data`` decompressed by the codec's own tool; the test is skipped if it is not installed."""
    if shutil.which(TOOLS[codec][0]) is None:
        pytest.skip(f"{TOOLS[codec][0]} not installed")
    return subprocess.run(TOOLS[codec], input=data, capture_output=True, check=True).stdout
