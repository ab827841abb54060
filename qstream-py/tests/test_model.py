"""Model API on the tiny fixture against transformers' reference outputs."""

import math

import numpy as np
import pytest

import qstream


def test_greedy_ids_match_transformers(tiny_model, reference):
    ids = tiny_model.generate_ids(reference["input_ids"], max_tokens=16, temperature=0, stop_on_eos=False)
    assert ids == reference["greedy_ids"]


def test_greedy_ids_match_gen_ids_tensor(tiny_model, reference_tensors):
    prompt = reference_tensors["input_ids"][0].tolist()
    want = reference_tensors["gen_ids"].tolist()
    assert tiny_model.generate_ids(prompt, max_tokens=len(want), temperature=0, stop_on_eos=False) == want


def test_logits_match_transformers(tiny_model, reference_tensors):
    ids = reference_tensors["input_ids"][0].tolist()
    want = reference_tensors["logits"]
    got = tiny_model.logits(ids)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    assert got.shape == want.shape == (len(ids), tiny_model.info["n_vocab"])
    tol = 1e-4 * float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= tol


def test_logits_accept_numpy_ids(tiny_model, reference_tensors):
    ids = reference_tensors["input_ids"][0]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
    want = tiny_model.logits(ids.tolist())
    # an int64 ndarray itself, a list of numpy integers, and an int32 ndarray
    assert np.array_equal(tiny_model.logits(ids), want)
    assert np.array_equal(tiny_model.logits(list(ids)), want)
    assert np.array_equal(tiny_model.logits(ids.astype(np.int32)), want)


def test_generate_with_ids_prompt_equals_greedy_ids(tiny_model, reference):
    text = tiny_model.generate(reference["input_ids"], max_tokens=16, temperature=0)
    # the fixture's EOS (2) does not occur in the first greedy tokens, so text = decode(ids)
    assert 2 not in reference["greedy_ids"]
    assert text == tiny_model.detokenize(reference["greedy_ids"], skip_special=True)


def test_seeded_sampling_is_reproducible(tiny_model):
    a = tiny_model.generate("hello world", max_tokens=24, seed=7, temperature=1.0)
    b = tiny_model.generate("hello world", max_tokens=24, seed=7, temperature=1.0)
    c = tiny_model.generate("hello world", max_tokens=24, seed=8, temperature=1.0)
    assert a == b
    assert a != c


def test_tokenize_detokenize_roundtrip(tiny_model):
    text = "the GNU General Public License"
    ids = tiny_model.tokenize(text)
    assert all(isinstance(i, int) for i in ids)
    assert tiny_model.detokenize(ids) == text
    # this tokenizer adds no BOS
    assert tiny_model.tokenize(text, add_special=False) == ids


def test_special_token_ids(tiny_model):
    # <|im_start|> is id 1, <|im_end|> id 2 in the fixture's vocabulary
    assert tiny_model.tokenize("<|im_start|>", add_special=False) == [1]
    assert tiny_model.detokenize([1, 2]) == "<|im_start|><|im_end|>"
    assert tiny_model.detokenize([1, 2], skip_special=True) == ""


def test_info(tiny_model, tiny_qsf):
    i = tiny_model.info
    assert i["arch"] == "llama"
    assert i["n_vocab"] == 512 and i["n_layer"] == 2 and i["n_embd"] == 64
    assert i["n_head"] == 4 and i["n_head_kv"] == 2
    assert i["quant_types"] == {"f32": sum(i["quant_types"].values())}
    assert i["bits_per_weight"] == pytest.approx(32.0)
    assert i["eos_token_ids"] == [2]
    assert i["n_threads"] == 2
    assert "im_start" in i["chat_template"]
    assert i["config"]["rope"]["scaling"]["type"] == "llama3"
    f = qstream.info(tiny_qsf)
    assert f["format_version"] == 2 and f["arch"] == "llama" and f["n_layer"] == 2
    assert f["n_params"] == i["n_params"]
    assert f["file_bytes"] == tiny_qsf.stat().st_size
    assert f["has_chat_template"] is True
    assert qstream.info(tiny_qsf, verify=True)["n_params"] == f["n_params"]


def test_chat_template_and_chat(tiny_model):
    msgs = [{"role": "user", "content": "hi"}]
    assert tiny_model.apply_chat_template(msgs) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = tiny_model.tokenize(tiny_model.apply_chat_template(msgs))
    want = tiny_model.generate(prompt_ids, max_tokens=12, temperature=0)
    assert tiny_model.chat(msgs, max_tokens=12, temperature=0) == want
    assert "".join(tiny_model.chat_stream(msgs, max_tokens=12, temperature=0)) == want


def test_stop_string(tiny_model, reference):
    full = tiny_model.generate(reference["input_ids"], max_tokens=16, temperature=0)
    stop = full[5:8]
    cut = tiny_model.generate(reference["input_ids"], max_tokens=16, temperature=0, stop=stop)
    assert cut == full[: full.index(stop)]
    assert tiny_model.generate(reference["input_ids"], max_tokens=16, temperature=0, stop=[stop, "zzzz"]) == cut


def test_perplexity_llama_cpp_method(tiny_model, reference_tensors):
    """ctx = 24 over the 24 reference ids: one chunk, the second half scored, from the
    transformers logits (no BOS in this tokenizer, so no token is replaced)."""
    ids = reference_tensors["input_ids"][0].tolist()
    logits = reference_tensors["logits"].astype(np.float64)
    first = len(ids) // 2
    nll = []
    for j in range(first, len(ids) - 1):
        row = logits[j]
        lse = row.max() + math.log(np.exp(row - row.max()).sum())
        nll.append(lse - row[ids[j + 1]])
    want = math.exp(sum(nll) / len(nll))
    assert tiny_model.perplexity(ids, ctx=24) == pytest.approx(want, rel=1e-4)
    # two chunks of 12: each chunk scored from an empty context
    two = []
    for c in range(2):
        chunk = ids[c * 12:(c + 1) * 12]
        lg = tiny_model.logits(chunk).astype(np.float64)
        for j in range(6, 11):
            row = lg[j]
            two.append(row.max() + math.log(np.exp(row - row.max()).sum()) - row[chunk[j + 1]])
    assert tiny_model.perplexity(ids + [5, 6, 7], ctx=12) == pytest.approx(math.exp(sum(two) / len(two)), rel=1e-5)


def test_perplexity_needs_ctx_tokens(tiny_model):
    with pytest.raises(ValueError):
        tiny_model.perplexity([5, 6, 7], ctx=8)


def test_quantized_convert_stays_close(tiny_dir, tmp_path, reference_tensors):
    out = tmp_path / "tiny-q8.qsf"
    r = qstream.convert(tiny_dir, out, quant="8bit", progress=False)
    assert r["file_bytes"] == out.stat().st_size
    assert "q8" in r["types"]
    with qstream.Model(out) as m:
        ids = reference_tensors["input_ids"][0].tolist()
        want = reference_tensors["logits"]
        err = np.abs(m.logits(ids) - want).max() / np.abs(want).max()
        assert 0 < err < 0.05


def test_convert_progress_callback(tiny_dir, tmp_path):
    seen = []
    qstream.convert(tiny_dir, tmp_path / "p.qsf", quant="f16",
                    progress=lambda done, total, name: seen.append((done, total, name)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert all(isinstance(n, str) for _, _, n in seen)


def test_convert_progress_cancel(tiny_dir, tmp_path):
    out = tmp_path / "c.qsf"
    with pytest.raises(qstream.CancelledError) as ei:
        qstream.convert(tiny_dir, out, progress=lambda d, t, n: False)
    assert ei.value.code == 400
    assert not out.exists()


def test_model_options(tiny_qsf, reference):
    with qstream.Model(tiny_qsf, threads=1, mmap=False, verify=True) as m:
        assert m.info["n_threads"] == 1
        assert m.generate_ids(reference["input_ids"], max_tokens=16, temperature=0, stop_on_eos=False) == reference["greedy_ids"]
    assert m.closed


def test_smollm2_greedy(smollm2):
    text = smollm2.generate("The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in text
    assert smollm2.info["n_vocab"] == 49152


def test_convert_outlier_alloc(tiny_dir, tmp_path):
    # the default spreads the outlier budget over all outlier tensors; "tensor" keeps the
    # fraction per tensor; both keep the same total, so the files have the same size up to
    # each tensor's 64-byte alignment
    sizes = {}
    for alloc in ["global", "tensor"]:
        out = tmp_path / f"{alloc}.qsf"
        rep = qstream.convert(tiny_dir, out, quant="2bit_outlier", outlier_frac=0.02,
                              outlier_alloc=alloc, progress=False)
        sizes[alloc] = out.stat().st_size
        assert rep["types"]["q2_outlier"] > 1
    assert abs(sizes["global"] - sizes["tensor"]) < 64 * 16
    with pytest.raises(qstream.InvalidArgumentError):
        qstream.convert(tiny_dir, tmp_path / "x.qsf", quant="2bit_outlier", outlier_alloc="rows",
                        progress=False)
