"""Shared fixtures: the C++ build's binaries (the `tq` tool, tq_codec_ref) and the default model.

TQ_BUILD_DIR names the C++ build folder (default: build/ of the repository); `make test` sets it.
"""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("TQ_BUILD_DIR", ROOT / "build"))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EVAL = ROOT / "data" / "eval.txt"
CALIB = ROOT / "data" / "calib.txt"


def _binary(name: str) -> pathlib.Path:
    for p in (BUILD / name, BUILD / "tests" / name):
        if p.exists():
            return p
    raise FileNotFoundError(f"{name} not found under {BUILD} (build the C++ project first, or "
                            "set TQ_BUILD_DIR)")


@pytest.fixture(scope="session")
def tq_tool() -> pathlib.Path:
    return _binary("tq")


@pytest.fixture(scope="session")
def codec_ref() -> pathlib.Path:
    return _binary("tq_codec_ref")


@pytest.fixture(scope="session")
def gguf_model():
    import turboquant

    if not MODEL.exists():
        raise FileNotFoundError(f"{MODEL} missing: run scripts/fetch_model.sh")
    return turboquant.Model(MODEL)
