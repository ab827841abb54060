"""Exception classes, codes (= the C API's qs_status) and error paths."""

import pytest

import qstream

CODES = {
    "InvalidArgumentError": 101,
    "ClosedError": 101,
    "QStreamFileNotFoundError": 200,
    "QStreamOSError": 201,
    "FormatError": 204,
    "UnsupportedError": 402,
    "QStreamMemoryError": 300,
    "ContextFullError": 301,
    "CancelledError": 400,
    "BusyError": 403,
    "InternalError": 901,
}


def test_hierarchy():
    for name, code in CODES.items():
        cls = getattr(qstream, name)
        assert issubclass(cls, qstream.QStreamError)
        assert cls.code == code
    assert issubclass(qstream.QStreamFileNotFoundError, FileNotFoundError)
    assert issubclass(qstream.QStreamOSError, OSError)
    assert issubclass(qstream.InvalidArgumentError, ValueError)
    assert issubclass(qstream.ClosedError, ValueError)
    assert issubclass(qstream.QStreamMemoryError, MemoryError)
    assert qstream.FormatError.__module__ == "qstream"


def test_missing_file(tmp_path):
    p = tmp_path / "nope.qsf"
    with pytest.raises(FileNotFoundError) as ei:
        qstream.Model(p)
    e = ei.value
    assert isinstance(e, qstream.QStreamError)
    assert e.code == 200 and e.errno == 2 and e.filename == str(p)
    with pytest.raises(qstream.QStreamFileNotFoundError):
        qstream.info(p)
    with pytest.raises(FileNotFoundError):
        qstream.convert(tmp_path / "missing-src", tmp_path / "out.qsf", progress=False)


def test_bad_magic(tmp_path):
    p = tmp_path / "junk.qsf"
    p.write_bytes(b"NOTAQSF!" + bytes(1000))
    with pytest.raises(qstream.FormatError) as ei:
        qstream.Model(p)
    assert ei.value.code == 202


def test_corrupt_file(tiny_qsf, tmp_path):
    data = tiny_qsf.read_bytes()
    trunc = tmp_path / "trunc.qsf"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(qstream.FormatError) as ei:
        qstream.Model(trunc)
    assert ei.value.code == 204
    # flip bytes in the middle of the weights: only a CRC check can see it
    flipped = bytearray(data)
    mid = len(data) // 2
    flipped[mid:mid + 8] = bytes(b ^ 0xFF for b in flipped[mid:mid + 8])
    bad = tmp_path / "flipped.qsf"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(qstream.FormatError) as ei:
        qstream.Model(bad, verify=True)
    assert ei.value.code == 205
    with pytest.raises(qstream.FormatError):
        qstream.info(bad, verify=True)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ValueError) as ei:
        qstream.Model(tmp_path)
    assert isinstance(ei.value, qstream.QStreamError)


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=-1.0),
        dict(temperature=float("nan")),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=2.0),
        dict(top_k=-1),
        dict(repeat_penalty=0.0),
    ],
)
def test_bad_sampling_arguments(tiny_model, kw):
    with pytest.raises(ValueError) as ei:
        tiny_model.generate("x", max_tokens=2, **kw)
    assert isinstance(ei.value, qstream.InvalidArgumentError) and ei.value.code == 101


def test_bad_arguments(tiny_model, tiny_dir, tmp_path, tiny_qsf):
    with pytest.raises(ValueError):
        tiny_model.logits([1, 2, 100000])  # id >= n_vocab
    with pytest.raises(ValueError):
        tiny_model.logits([])
    with pytest.raises(ValueError):
        tiny_model.generate([], max_tokens=2)
    with pytest.raises(ValueError) as ei:
        qstream.convert(tiny_dir, tmp_path / "x.qsf", quant="7bit", progress=False)
    assert ei.value.code == 101
    with pytest.raises(ValueError):
        qstream.convert(tiny_dir, tmp_path / "x.qsf", block_size=48, progress=False)
    with pytest.raises(ValueError):
        qstream.Model(tiny_qsf, threads=0)
    with pytest.raises(TypeError):
        tiny_model.generate(3.5)


def test_context_full(tiny_qsf):
    with qstream.Model(tiny_qsf, n_ctx=8) as m:
        with pytest.raises(qstream.ContextFullError) as ei:
            m.generate(list(range(3, 20)), max_tokens=2)
        assert ei.value.code == 301
        with pytest.raises(qstream.ContextFullError):
            m.generate(list(range(3, 12)), max_tokens=1)
        # generation stops when the context is full instead of failing: 8 - 3 tokens fill
        # it, and one more is sampled from the last logits (it is not decoded)
        assert len(m.generate_ids([5, 6, 7], max_tokens=100, temperature=0, stop_on_eos=False)) == 6


def test_ram_budget(tiny_qsf):
    with pytest.raises(MemoryError) as ei:
        qstream.Model(tiny_qsf, budget=1000)
    assert isinstance(ei.value, qstream.QStreamMemoryError)
    assert ei.value.code == 302


def test_closed_model(tiny_qsf):
    m = qstream.Model(tiny_qsf)
    s = m.stream("free", max_tokens=3, temperature=0)
    m.close()
    m.close()  # idempotent
    assert m.closed and "closed" in repr(m)
    for call in (lambda: m.generate("x"), lambda: m.tokenize("x"), lambda: m.info,
                 lambda: m.logits([5]), lambda: m.stream("x"), lambda: m.chat([])):
        with pytest.raises(qstream.ClosedError) as ei:
            call()
        assert ei.value.code == 101
    # a stream created before close still finishes (it holds its own reference)
    assert len("".join(s)) > 0 or s.tokens


def test_context_manager_closes(tiny_qsf):
    with qstream.Model(tiny_qsf) as m:
        assert not m.closed
    assert m.closed
    with pytest.raises(ValueError):
        m.detokenize([5])


def test_act_bits_set_and_rejected():
    before = qstream.act_bits()
    assert before in (8, 16)
    try:
        qstream.set_act_bits(8)
        assert qstream.act_bits() == 8
        with pytest.raises(qstream.InvalidArgumentError, match="expected 8 or 16") as e:
            qstream.set_act_bits(12)
        assert e.value.code == 101  # QS_STATUS_INVALID_ARGUMENT
        assert qstream.act_bits() == 8
    finally:
        qstream.set_act_bits(before)
