"""Shared fixtures: the tiny llama fixture converted to QSF with qstream.convert, its
transformers reference outputs, and (when present) the SmolLM2 QSF made by
scripts/run_default.sh."""

import json
import os
from pathlib import Path

import pytest

import qstream

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples-py"
SMOLLM2 = Path(os.environ.get("QSTREAM_SMOLLM2_QSF") or os.path.expanduser("~/.cache/qstream/smollm2-135m-q4_1.qsf"))
SMOLLM2_SKIP = f"{SMOLLM2} is absent (scripts/run_default.sh creates it)"
# In CI (CI=true), or when the test scripts named the model (QSTREAM_SMOLLM2_GGUF /
# QSTREAM_SMOLLM2_QSF set), a missing SmolLM2 fails the tests that need it instead of skipping.
SMOLLM2_REQUIRED = (os.environ.get("CI") in ("true", "1")
                    or bool(os.environ.get("QSTREAM_SMOLLM2_GGUF"))
                    or bool(os.environ.get("QSTREAM_SMOLLM2_QSF")))


def require_smollm2() -> None:
    """Skip (with the reason) when the SmolLM2 QSF is absent, or fail when it is required."""
    if SMOLLM2.is_file():
        return
    if SMOLLM2_REQUIRED:
        pytest.fail(f"{SMOLLM2} is absent and the SmolLM2 tests are required here "
                    "(CI=true or QSTREAM_SMOLLM2_GGUF/QSF set)", pytrace=False)
    pytest.skip(SMOLLM2_SKIP)


def _tiny_dir() -> Path:
    # the repository's copy, else the shared fixtures beside it (`../shared` from its root)
    for d in (ROOT / "tests/fixtures/tiny/llama", ROOT.parent / "shared/fixtures/tiny/llama"):
        if (d / "model.safetensors").is_file():
            return d
    pytest.skip("tiny llama fixture not found (tests/fixtures/tiny/llama)")


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The tiny random llama HF folder (tests/fixtures/tiny/llama)."""
    return _tiny_dir()


@pytest.fixture(scope="session")
def tiny_qsf(tiny_dir, tmp_path_factory) -> Path:
    """The tiny llama converted losslessly (f32) with qstream.convert."""
    out = tmp_path_factory.mktemp("qsf") / "tiny-f32.qsf"
    report = qstream.convert(tiny_dir, out, quant="f32", progress=False)
    assert report["types"] == {"f32": report["types"]["f32"]}
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_qsf):
    """A shared Model on the tiny QSF (2 threads)."""
    with qstream.Model(tiny_qsf, threads=2) as m:
        yield m


@pytest.fixture(scope="session")
def reference(tiny_dir) -> dict:
    """reference.json of the fixture."""
    return json.loads((tiny_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def reference_tensors(tiny_dir) -> dict:
    """reference.safetensors of the fixture (input_ids, logits, gen_ids, gen_logits)."""
    st = pytest.importorskip("safetensors.numpy")
    return st.load_file(str(tiny_dir / "reference.safetensors"))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct QSF, or skip (fail where it is required)."""
    require_smollm2()
    with qstream.Model(SMOLLM2) as m:
        yield m
