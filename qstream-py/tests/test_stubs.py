"""The hand-written stubs (_qstream.pyi) match the runtime module (mypy.stubtest)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import qstream


def test_stub_files_are_installed():
    pkg = Path(qstream.__file__).parent
    assert (pkg / "_qstream.pyi").is_file()
    assert (pkg / "py.typed").is_file()


def test_stubtest():
    if os.environ.get("CI") in ("true", "1"):
        # in CI the stub check must run: scripts/test_py.sh installs mypy
        import mypy.stubtest  # noqa: F401
    else:
        pytest.importorskip("mypy.stubtest", reason="mypy is not installed: the stubs are NOT checked")
    allow = Path(__file__).with_name("stubtest-allowlist.txt")
    p = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "qstream._qstream", "--allowlist", str(allow)],
        capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_public_api_has_docstrings():
    for name in qstream.__all__:
        obj = getattr(qstream, name)
        if name == "__version__":
            continue
        assert obj.__doc__, name
    for cls in (qstream.Model, qstream.Session, qstream.TokenStream, qstream.GenerateResult):
        for attr, v in vars(cls).items():
            if not attr.startswith("_"):
                assert v.__doc__, f"{cls.__name__}.{attr}"
