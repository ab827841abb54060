#!/usr/bin/env python3
"""Reference token ids for the GGUF tokenizer golden test (tests/tokenizer_golden.rs).

Loads tokenizers exactly as transformers does from a GGUF file
(`AutoTokenizer.from_pretrained(dir, gguf_file=name)`; transformers 5.x, no torch needed) and
records, for each test string: ids without special tokens, ids with them (add_special_tokens=True),
and the decode of the plain ids (skip_special_tokens=False and True).

Writes smollm2_ids.json (SmolLM2-135M-Instruct Q4_1 GGUF, byte-level BPE) and, from a tiny
SentencePiece-style GGUF this script builds with gguf-py (tiny_spm.gguf.bin, committed),
tiny_spm_ids.json.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SMOLLM2 = os.path.expanduser("~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf")

STRINGS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "   three leading spaces",
    "multiple   spaces    between words",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "\n\n\n",
    " \n \t \r\n mixed whitespace",
    "Café résumé naïve façade",
    "Ünïcödé äccënts ñ ß ø å",
    "emoji: 😀🎉👍🏽 family: 👨‍👩‍👧",
    "中文测试：你好，世界！",
    "日本語のテキストです。",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "Привет, мир!",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }",
    "<html><body class=\"x\">text</body></html>",
    "numbers 1234567890 and 3.14159 and 1,000,000",
    "12345",
    "phone: +1-555-0100, year 2024",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<repo_name>qstream<file_sep>main.rs",
    "I'm you're they've we'll she'd it's",
    "UPPERCASE lowercase MiXeD",
    "https://example.com/path?query=1&b=2#frag",
    "email@example.org",
    "a",
    " ",
    "  ",
    "!!!???...",
    "----====****",
    "The quick brown fox jumps over the lazy dog.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x² + y² = z²  ∑∫√∞ ≠ ≤ ≥",
    "Zero\u200bwidth\u00a0nbsp",
    "λ-calculus ∀x∃y",
    "$$\\frac{a}{b}$$ and `inline code`",
    "tabs\t\t\tand\u3000ideographic space",
]


def record(tok, out_path, source):
    cases = []
    for s in STRINGS:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        ids_special = tok(s, add_special_tokens=True)["input_ids"]
        cases.append({
            "text": s,
            "ids": ids,
            "ids_add_special": ids_special,
            "decode": tok.decode(ids, skip_special_tokens=False),
            "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"source": source, "transformers_loader": "AutoTokenizer.from_pretrained(dir, gguf_file=...)",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {out_path}: {len(cases)} cases")


def load(path):
    from transformers import AutoTokenizer
    d = tempfile.mkdtemp()
    try:
        name = "model.gguf"
        os.symlink(os.path.abspath(path), os.path.join(d, name))
        return AutoTokenizer.from_pretrained(d, gguf_file=name)
    finally:
        shutil.rmtree(d)


def build_tiny_spm(path):
    """A SentencePiece-style ("llama" tokenizer model) vocabulary without merges: transformers
    derives merges from the scores. Byte tokens <0x00>..<0xFF> give byte fallback."""
    import gguf
    pieces = ["▁", "t", "h", "e", "▁t", "he", "▁the", "▁a", "a", "n", "d", "▁an", "▁and",
              "▁▁", "▁▁▁▁", "l", "o", "ll", "▁he", "llo", "▁hello", "w", "r", "▁w", "or", "ld",
              "▁world", "é", "▁caf", "c", "f", "▁c", "af", "i", "s", "▁is", "▁i", "▁x", "x",
              "1", "2", "12", "中", "文", "\n"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces + ["<|im_end|>", "<think>"]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces) + [3, 4]
    rng = np.random.default_rng(7)
    scores = [0.0] * 259 + [float(-i - rng.integers(0, 3)) for i in range(len(pieces))] + [0.0, 0.0]
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    spm = os.path.join(HERE, "tiny_spm.gguf.bin")
    build_tiny_spm(spm)
    record(load(spm), os.path.join(HERE, "tiny_spm_ids.json"), "tiny_spm.gguf.bin")
    if os.path.exists(SMOLLM2):
        record(load(SMOLLM2), os.path.join(HERE, "smollm2_ids.json"), os.path.basename(SMOLLM2))
    else:
        print(f"{SMOLLM2} absent; smollm2_ids.json not regenerated", file=sys.stderr)
