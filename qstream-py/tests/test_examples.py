"""Every examples-py/*.py runs: on the tiny fixture always, on SmolLM2 when it is present."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import EXAMPLES, SMOLLM2, require_smollm2


def run(args, stdin=None, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, *map(str, args)], input=stdin, capture_output=True,
                       text=True, timeout=timeout, env=e)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_every_example_is_tested():
    names = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert names == {"quickstart.py", "chat.py", "convert.py", "numpy_logits.py", "attention.py"}


def test_quickstart_tiny(tiny_qsf):
    out = run([EXAMPLES / "quickstart.py", tiny_qsf])
    assert out.startswith("llama: 0.1M parameters")
    assert "greedy: The capital of France is" in out and "chat: " in out


def test_quickstart_env_var(tiny_qsf):
    out = run([EXAMPLES / "quickstart.py"], env={"QSTREAM_MODEL": str(tiny_qsf)})
    assert "llama: 0.1M parameters" in out


def test_chat_tiny(tiny_qsf):
    out = run([EXAMPLES / "chat.py", tiny_qsf, "--temperature", "0", "--max-tokens", "8"],
              stdin="hello\n\nsecond question\n")
    assert len(out.splitlines()) == 2  # one reply per non-empty line


def test_convert_tiny(tiny_dir, tmp_path):
    dst = tmp_path / "ex.qsf"
    out = run([EXAMPLES / "convert.py", tiny_dir, dst, "--quant", "8bit", "--compress"])
    assert dst.is_file() and "compressed=True" in out and "greedy continuation" in out


def test_numpy_logits_tiny(tiny_qsf):
    out = run([EXAMPLES / "numpy_logits.py", tiny_qsf])
    assert "shape (" in out and "perplexity (llama.cpp method" in out


def test_python_m_qstream(tiny_qsf):
    out = run(["-m", "qstream", tiny_qsf, "-p", "free software", "-n", "8", "--temperature", "0"])
    assert out.startswith("free software")
    info = run(["-m", "qstream", tiny_qsf, "--info"])
    assert '"arch": "llama"' in info
    p = subprocess.run([sys.executable, "-m", "qstream", "/nonexistent.qsf"], capture_output=True, text=True)
    assert p.returncode == 1 and "not found" in p.stderr


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_ctrl_c_interrupts_generation(tiny_qsf, mode):
    """SIGINT during a long generation raises KeyboardInterrupt between tokens."""
    call = {"generate": "m.generate_ids([5, 6, 7], max_tokens=200000, temperature=0, stop_on_eos=False)",
            # a stream may end at EOS: restart it until interrupted
            "stream": "while True: list(m.stream([5, 6, 7], max_tokens=200000))"}[mode]
    code = (
        "import sys, qstream\n"
        f"m = qstream.Model({str(tiny_qsf)!r}, n_ctx=200004, threads=1)\n"
        "print('ready', flush=True)\n"
        "try:\n"
        f"    {call}\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True); sys.exit(7)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    assert p.poll() is None, "generation ended before the signal"
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=30)
    assert rc == 7 and "interrupted" in p.stdout.read()
    assert time.perf_counter() - t0 < 10


@pytest.fixture
def needs_smollm2_fixture():
    require_smollm2()


needs_smollm2 = pytest.mark.usefixtures("needs_smollm2_fixture")


@needs_smollm2
def test_quickstart_smollm2():
    out = run([EXAMPLES / "quickstart.py"])
    assert "Paris" in out


@needs_smollm2
def test_chat_smollm2(smollm2):
    msg = "Hello! What is your name?"
    out = run([EXAMPLES / "chat.py", "--temperature", "0", "--max-tokens", "24"],
              stdin=msg + "\n")
    # the example streams exactly the library's greedy reply to the same conversation
    want = smollm2.chat([{"role": "user", "content": msg}], max_tokens=24, temperature=0)
    assert len(want.strip()) > 8, want
    assert out.strip() == want.strip()


@needs_smollm2
def test_numpy_logits_smollm2():
    out = run([EXAMPLES / "numpy_logits.py"])
    assert "' dog'" in out.split("top-5")[1].splitlines()[1]


@needs_smollm2
def test_convert_smollm2(tmp_path):
    gguf = SMOLLM2.parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip(f"{gguf} is absent")
    out = run([EXAMPLES / "convert.py", gguf, tmp_path / "s.qsf", "--quant", "keep"])
    assert "greedy continuation" in out


def test_chat_tiny_keeps_the_kv_cache(tiny_qsf):
    """chat.py keeps a Session: the second turn decodes only the new tokens."""
    p = subprocess.run([sys.executable, str(EXAMPLES / "chat.py"), str(tiny_qsf), "--temperature", "0",
                        "--max-tokens", "8"], input="hello\nsecond question\n", capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    import re
    stats = [tuple(map(int, m)) for m in
             re.findall(r"\[(\d+) new prompt tokens, (\d+) generated, (\d+) in the session\]", p.stderr)]
    assert len(stats) == 2, p.stderr
    (n1, g1, t1), (n2, g2, t2) = stats
    assert n1 == t1 - g1  # the first turn decodes its whole prompt
    assert 0 < n2 < t2 - g2  # the second only what the first did not already hold


def test_attention_example():
    out = run([EXAMPLES / "attention.py"])
    assert "attention: NumPy agrees" in out and "k=q4h   v=q4" in out
