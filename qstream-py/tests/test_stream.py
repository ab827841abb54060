"""TokenStream: pieces, ids, early stop, cancel."""

import threading

import pytest

import qstream


def test_stream_equals_generate(tiny_model):
    kw = dict(max_tokens=40, temperature=0.9, seed=3)
    text = tiny_model.generate("free software", **kw)
    s = tiny_model.stream("free software", **kw)
    assert isinstance(s, qstream.TokenStream)
    pieces = list(s)
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text == s.text
    assert s.stop_reason in ("max_tokens", "eos")
    ids = tiny_model.generate_ids(tiny_model.tokenize("free software"), max_tokens=40, temperature=0.9, seed=3)
    assert s.tokens == ids


def test_stream_greedy_tokens_match_reference(tiny_model, reference):
    s = tiny_model.stream(reference["input_ids"], max_tokens=16, temperature=0)
    "".join(s)
    assert s.tokens == reference["greedy_ids"]
    assert s.stop_reason == "max_tokens"


def test_break_stops_generation(tiny_model, reference):
    s = tiny_model.stream(reference["input_ids"], max_tokens=200, temperature=0)
    for i, _ in enumerate(s):
        if i == 2:
            break
    n = len(s.tokens)
    assert 3 <= n < 10
    s.close()
    assert s.stop_reason == "stopped"
    assert list(s) == []
    assert len(s.tokens) == n


def test_stream_is_lazy_and_context_manager(tiny_model, reference):
    with tiny_model.stream(reference["input_ids"], max_tokens=50, temperature=0) as s:
        assert s.tokens == [] and s.stop_reason is None
        next(s)
        assert len(s.tokens) >= 1
    assert s.stop_reason == "stopped"
    with pytest.raises(StopIteration):
        next(s)


def test_cancel_from_another_thread(tiny_model, reference):
    s = tiny_model.stream(reference["input_ids"], max_tokens=200, temperature=0)
    next(s)
    t = threading.Thread(target=s.cancel)
    t.start()
    t.join()
    rest = list(s)
    assert len(rest) <= 2
    assert s.stop_reason == "cancelled"
    assert len(s.tokens) < 10


def test_dropping_an_unfinished_stream(tiny_model, reference):
    for _ in range(20):
        s = tiny_model.stream(reference["input_ids"], max_tokens=100, temperature=0)
        next(s)
        del s
    # the model still works and gives the reference result
    assert tiny_model.generate_ids(reference["input_ids"], max_tokens=16, temperature=0, stop_on_eos=False) == reference["greedy_ids"]


def test_stream_errors_surface_on_iteration(tiny_model):
    s = tiny_model.stream([999999], max_tokens=4)
    with pytest.raises(ValueError) as ei:
        next(s)
    assert ei.value.code == 101
    assert s.stop_reason == "error"
