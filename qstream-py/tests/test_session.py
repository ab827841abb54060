"""Session (a KV cache kept across calls), GenerateResult, consistent signatures,
penalties, and closing a stream from another thread."""

import inspect
import subprocess
import sys
import textwrap

import pytest

import qstream


def greedy(model, ids, n):
    return model.generate_ids(ids, max_tokens=n, temperature=0, stop_on_eos=False)


def test_generate_details(tiny_model, reference):
    ids = reference["input_ids"]
    r = tiny_model.generate(ids, max_tokens=16, temperature=0, stop_on_eos=False, details=True)
    assert isinstance(r, qstream.GenerateResult)
    assert r.tokens == reference["greedy_ids"]
    assert r.text == tiny_model.generate(ids, max_tokens=16, temperature=0, stop_on_eos=False)
    assert r.stop_reason == "max_tokens"
    assert (r.n_prompt, r.n_generated) == (len(ids), 16)
    assert r.prompt_secs > 0 and r.gen_secs > 0
    assert "n_generated=16" in repr(r)
    # a stop string
    cut = r.text[len(r.text) // 2:][:3]
    if cut.strip():
        r2 = tiny_model.generate(ids, max_tokens=16, temperature=0, stop=cut, details=True)
        assert r2.stop_reason == "stop_string" and cut not in r2.text
    # chat and streams give the same record
    msgs = [{"role": "user", "content": "hello"}]
    c = tiny_model.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False, details=True)
    assert c.text == tiny_model.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False)
    s = tiny_model.stream(ids, max_tokens=16, temperature=0, stop_on_eos=False)
    assert s.result is None
    "".join(s)
    assert s.result is not None and s.result.tokens == r.tokens and s.result.n_prompt == len(ids)


def test_signatures_are_consistent():
    """Every generation method takes the same options with the same defaults."""
    def opts(f, drop):
        ps = list(inspect.signature(f).parameters.values())
        return [(p.name, p.default, p.kind) for p in ps[1:] if p.name not in drop]

    methods = [qstream.Model.generate, qstream.Model.generate_ids, qstream.Model.stream,
               qstream.Model.chat, qstream.Model.chat_stream, qstream.Session.generate,
               qstream.Session.stream, qstream.Session.chat, qstream.Session.chat_stream]
    ref = opts(methods[0], {"details"})
    names = [n for n, _, _ in ref]
    assert names[:1] == ["prompt"] or names[0] in ("prompt", "messages")
    for f in methods:
        got = opts(f, {"details"})
        assert [x[1:] for x in got[1:]] == [x[1:] for x in ref[1:]], f.__qualname__
        assert [x[0] for x in got[1:]] == names[1:], f.__qualname__
        assert all(k == inspect.Parameter.KEYWORD_ONLY for _, _, k in got[1:]), f.__qualname__
    d = dict((n, v) for n, v, _ in ref)
    assert d["max_tokens"] == 256 and d["temperature"] == 0.7
    assert d["presence_penalty"] == 0.0 and d["frequency_penalty"] == 0.0
    with pytest.raises(TypeError):
        qstream.Model.generate_ids(None, [1, 2], 16)  # max_tokens is keyword-only everywhere


def test_presence_and_frequency_penalties(tiny_model, reference):
    ids = reference["input_ids"]
    base = greedy(tiny_model, ids, 40)
    assert len(set(base)) < len(base), "the baseline never repeats: the test would prove nothing"
    for kw in ({"presence_penalty": 1000.0}, {"frequency_penalty": 1000.0}):
        got = tiny_model.generate_ids(ids, max_tokens=40, temperature=0, stop_on_eos=False,
                                      repeat_last_n=200, **kw)
        seen = list(ids)
        for t in got:
            assert t not in seen, (kw, got)
            seen.append(t)
    with pytest.raises(qstream.InvalidArgumentError):
        tiny_model.generate(ids, presence_penalty=float("nan"))


def test_session_continues_across_calls(tiny_model, reference):
    ids = reference["input_ids"]
    want = greedy(tiny_model, ids, 16)
    with tiny_model.session() as s:
        assert s.n_past == 0 and s.tokens == []
        a = s.generate(ids, max_tokens=8, temperature=0, stop_on_eos=False, details=True)
        assert a.n_prompt == len(ids) and a.tokens == want[:8]
        b = s.generate([], max_tokens=8, temperature=0, stop_on_eos=False, details=True)
        # only the last sampled token of the first call is decoded: nothing is re-prefilled
        assert b.n_prompt == 1
        assert a.tokens + b.tokens == want
        assert s.tokens == ids + want and s.n_past == len(ids) + 16
        # a text prompt is appended (no BOS in the middle of a conversation)
        c = s.generate(" and more", max_tokens=2, temperature=0, details=True)
        assert c.n_prompt == 1 + len(tiny_model.tokenize(" and more", add_special=False))
        s.reset()
        assert s.n_past == 0
        assert s.generate(ids, max_tokens=16, temperature=0, stop_on_eos=False, details=True).tokens == want
    assert s.closed
    with pytest.raises(qstream.ClosedError):
        s.generate(ids)


def test_session_truncate_never_samples_stale_logits(tiny_model, reference):
    ids = reference["input_ids"]
    s = tiny_model.session()
    s.generate(ids, max_tokens=6, temperature=0, stop_on_eos=False)
    for n in (len(ids) + 3, len(ids), 3):
        s.truncate(n)
        assert s.n_past == n
        prefix = s.tokens
        got = s.generate([], max_tokens=4, temperature=0, stop_on_eos=False, details=True).tokens
        assert got == greedy(tiny_model, prefix, 4), n
    s.truncate(10 ** 6)  # no-op
    s.truncate(0)
    assert s.n_past == 0
    with pytest.raises(qstream.InvalidArgumentError):
        s.generate([])


def test_session_chat_decodes_only_the_new_turn(tiny_model):
    s = tiny_model.session()
    msgs = [{"role": "user", "content": "hello there"}]
    r1 = s.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False, details=True)
    full1 = tiny_model.tokenize(tiny_model.apply_chat_template(msgs))
    assert r1.n_prompt == len(full1)
    assert r1.text == tiny_model.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False)
    msgs += [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "and then?"}]
    r2 = s.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False, details=True)
    full2 = tiny_model.tokenize(tiny_model.apply_chat_template(msgs))
    assert 0 < r2.n_prompt < len(full2) - len(full1) + 8
    assert s.tokens[:len(full2)] == full2
    # the reply is what a fresh context gives
    assert r2.tokens == tiny_model.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False,
                                        details=True).tokens
    # asking again re-decodes at least one token and gives the same reply
    r3 = s.chat(msgs, max_tokens=6, temperature=0, stop_on_eos=False, details=True)
    assert r3.n_prompt >= 1 and r3.tokens == r2.tokens


def test_session_is_busy_while_a_stream_runs(tiny_model, reference):
    ids = reference["input_ids"]
    s = tiny_model.session()
    st = s.stream(ids, max_tokens=50, temperature=0, stop_on_eos=False)
    with pytest.raises(qstream.BusyError):
        s.generate(ids)  # claimed from the moment the stream exists
    next(st)
    next(st)
    with pytest.raises(qstream.BusyError):
        s.reset()
    st.close()
    n = len(st.tokens)
    assert s.tokens == ids + st.tokens and n >= 2
    # continues after the streamed tokens
    more = s.generate([], max_tokens=3, temperature=0, stop_on_eos=False, details=True).tokens
    assert st.tokens + more == greedy(tiny_model, ids, n + 3)
    # a stream dropped before it started releases the session
    st2 = s.chat_stream([{"role": "user", "content": "x"}], max_tokens=3)
    del st2
    s.reset()


def test_session_context_full(tiny_model):
    s = tiny_model.session(n_ctx=16)
    assert s.n_ctx == 16
    with pytest.raises(qstream.ContextFullError):
        s.generate(list(range(3, 23)), max_tokens=2)
    assert s.n_past == 0
    r = s.generate(list(range(3, 13)), max_tokens=100, temperature=0, stop_on_eos=False, details=True)
    # the window is full: 16 cached tokens plus the last sampled one, which did not fit
    assert r.stop_reason == "max_tokens" and r.n_generated == 7 and s.n_past == 17
    with pytest.raises(qstream.ContextFullError):
        s.generate([], max_tokens=1)
    s.truncate(8)
    assert s.generate([], max_tokens=2, temperature=0, details=True).n_prompt == 1
    with pytest.raises(qstream.InvalidArgumentError):
        tiny_model.session(n_ctx=0)


def test_close_from_another_thread_while_iterating(tiny_qsf):
    """close() from a second thread while the first iterates: both return within a second
    (before, close() waited for the stream's lock with the GIL held while next() waited for
    the GIL with that lock held). Run in a subprocess so a deadlock fails instead of hanging."""
    code = textwrap.dedent(f"""
        import threading, time, qstream
        m = qstream.Model({str(tiny_qsf)!r}, n_ctx=100000, threads=1)
        for round in range(10):
            s = m.stream([5, 6, 7], max_tokens=50000, temperature=0, stop_on_eos=False)
            started = threading.Event()
            done = {{}}
            def iterate():
                for i, _ in enumerate(s):
                    if i == 2:
                        started.set()
                done["iter"] = time.perf_counter()
            t = threading.Thread(target=iterate)
            t.start()
            assert started.wait(30)
            t0 = time.perf_counter()
            closer = threading.Thread(target=lambda: (s.close(), done.__setitem__("close", time.perf_counter())))
            closer.start()
            closer.join(1.0)
            t.join(1.0)
            assert not closer.is_alive() and not t.is_alive(), "deadlock"
            assert done["close"] - t0 < 1.0 and done["iter"] - t0 < 1.0, done
            assert s.stop_reason == "stopped" and 3 <= len(s.tokens) < 50000
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
