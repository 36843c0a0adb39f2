"""The malloc settings of vitkit.perf.allocator: applied once on glibc, opt-out respected."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

_SNIPPET = "from vitkit.perf.allocator import tune_cpu_allocator as t; print(t(), t())"


def _run(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", _SNIPPET], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_once_on_glibc() -> None:
    assert _run({"VITKIT_TUNE_MALLOC": "1", "LD_PRELOAD": ""}) == "True True"


@pytest.mark.parametrize("env", [{"VITKIT_TUNE_MALLOC": "0"}, {"VITKIT_TUNE_MALLOC": "off"},
                                 {"VITKIT_TUNE_MALLOC": "1", "LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}])
def test_left_alone_when_opted_out_or_another_allocator_is_preloaded(env: dict[str, str]) -> None:
    # A preload path that does not exist only makes the loader warn; the snippet still runs.
    assert _run(env) == "False False"
