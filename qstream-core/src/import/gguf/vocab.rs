//! GGUF vocabulary → HuggingFace `tokenizer.json`.
//!
//! The reference is transformers' own GGUF loader (`transformers/integrations/gguf/
//! gguf_tokenizer_mapping.py` with `GPT2Tokenizer` / `LlamaTokenizer`): we emit the JSON that
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` builds, so the `tokenizers` crate
//! tokenizes exactly as transformers does.
//!
//! - `tokenizer.ggml.model == "gpt2"`: byte-level BPE. Tokens already written in the GPT-2 byte
//!   alphabet are kept, others are respelled byte by byte. Pre-tokenizer: `ByteLevel` with its
//!   built-in GPT-2 regex, or, for the `tokenizer.ggml.pre` values transformers knows (llama3,
//!   qwen2, gpt-4o, ...), a `Split` on that model's regex followed by `ByteLevel` without regex.
//!   Decoder `ByteLevel`.
//! - `tokenizer.ggml.model == "llama"`: SentencePiece-style BPE with byte fallback. Merges come
//!   from the file, or are derived from the vocabulary with token scores as priority
//!   (transformers' `generate_merges`). Pre-tokenizer `Metaspace(▁, prepend_scheme=first,
//!   split=false)`; decoder `Replace(▁→space), ByteFallback, Fuse, Strip(1 leading space)`.
//!   Like transformers, `tokenizer.ggml.add_space_prefix` is not consulted.
//!
//! Added tokens: CONTROL (type 3) tokens and the bos/eos/unk/pad tokens as special (in a
//! byte-level vocabulary, control tokens outside the byte alphabet are llama.cpp mislabels
//! and skipped, as transformers does); USER_DEFINED (type 4) tokens as non-special. The
//! post-processor adds BOS/EOS per `tokenizer.ggml.add_bos_token` / `add_eos_token`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::parse::{GgufFile, MetaValue};
use crate::{Error, Result};

/// llama.cpp token types.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex transformers uses for a `tokenizer.ggml.pre` value (None: plain ByteLevel).
fn pre_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's byte → printable char table (`bytes_to_unicode`).
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let code = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// What the vocabulary says, read from metadata.
pub(crate) struct Vocab {
    pub model: String,
    pub tokens: Vec<String>,
    pub types: Vec<i64>,
    pub scores: Vec<f32>,
    pub merges: Option<Vec<String>>,
    pub pre: Option<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

fn str_array(f: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    match f.get(key) {
        None => Ok(None),
        Some(MetaValue::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::corrupt(format!("GGUF: {key} holds a non-string")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::corrupt(format!("GGUF: {key} is not an array"))),
    }
}

fn num_array(f: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<f64>>> {
    match f.get(key) {
        None => Ok(None),
        Some(MetaValue::Array(a)) => {
            if a.len() != n {
                return Err(Error::corrupt(format!(
                    "GGUF: {key} has {} entries for {n} tokens",
                    a.len()
                )));
            }
            a.iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| Error::corrupt(format!("GGUF: {key} holds a non-number")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        }
        Some(_) => Err(Error::corrupt(format!("GGUF: {key} is not an array"))),
    }
}

impl Vocab {
    /// Read the `tokenizer.ggml.*` keys. `None` when the file has no vocabulary.
    pub fn read(f: &GgufFile) -> Result<Option<Vocab>> {
        let Some(tokens) = str_array(f, "tokenizer.ggml.tokens")? else {
            return Ok(None);
        };
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::corrupt(format!("GGUF: vocabulary of {n} tokens")));
        }
        let model = f
            .get("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .unwrap_or("llama")
            .to_owned();
        let types = num_array(f, "tokenizer.ggml.token_type", n)?
            .map(|v| v.into_iter().map(|x| x as i64).collect())
            .unwrap_or_else(|| vec![1; n]);
        let scores = num_array(f, "tokenizer.ggml.scores", n)?
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .unwrap_or_else(|| vec![0.0; n]);
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                    _ => Err(Error::corrupt(format!(
                        "GGUF: {key} = {v:?} outside the {n}-token vocabulary"
                    ))),
                },
            }
        };
        let flag = |key: &str| f.get(key).and_then(MetaValue::as_bool);
        Ok(Some(Vocab {
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(model == "llama"),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
            merges: str_array(f, "tokenizer.ggml.merges")?,
            pre: f
                .get("tokenizer.ggml.pre")
                .and_then(MetaValue::as_str)
                .map(str::to_owned),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            model,
            tokens,
            types,
            scores,
        }))
    }

    /// The id of the token spelled `text`, if any (the last one, like a Python dict).
    pub fn find(&self, text: &str) -> Option<u32> {
        self.tokens
            .iter()
            .rposition(|t| t == text)
            .map(|i| i as u32)
    }

    /// The text of token `id`.
    pub fn text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Build the `tokenizer.json` text.
    pub fn tokenizer_json(&self) -> Result<String> {
        let byte_level = match self.model.as_str() {
            "gpt2" => true,
            "llama" => false,
            m => {
                return Err(Error::Tokenizer(format!(
                    "GGUF tokenizer model {m:?} is not supported (gpt2, llama)"
                )))
            }
        };
        let table = byte_alphabet();
        let in_alphabet = |t: &str| t.chars().all(|c| table.contains(&c));
        // Vocabulary spelling as transformers writes it.
        let spelled: Vec<String> = if byte_level {
            self.tokens
                .iter()
                .map(|t| {
                    if in_alphabet(t) {
                        t.clone()
                    } else {
                        t.bytes().map(|b| table[b as usize]).collect()
                    }
                })
                .collect()
        } else {
            self.tokens.clone()
        };
        // token → id, last occurrence wins (Python dict semantics).
        let mut vocab_ids: HashMap<&str, u32> = HashMap::with_capacity(spelled.len());
        for (i, t) in spelled.iter().enumerate() {
            vocab_ids.insert(t.as_str(), i as u32);
        }
        let mut vocab = Map::new();
        for (i, t) in spelled.iter().enumerate() {
            if vocab_ids.get(t.as_str()) == Some(&(i as u32)) {
                vocab.insert(t.clone(), Value::from(i as u32));
            }
        }
        let merges: Vec<Value> = match &self.merges {
            Some(m) => m
                .iter()
                .map(|s| {
                    let (a, b) = s.split_once(' ').unwrap_or((s.as_str(), ""));
                    json!([a, b])
                })
                .collect(),
            None => self
                .derive_merges(&vocab_ids)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect(),
        };

        // Added tokens, by id.
        let roles: Vec<u32> = [self.bos, self.eos, self.unk, self.pad]
            .into_iter()
            .flatten()
            .collect();
        let mut added_tokens = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let id = i as u32;
            if vocab_ids.get(t.as_str()) != Some(&id) {
                continue; // respelled or shadowed by a later duplicate
            }
            let ty = self.types.get(i).copied().unwrap_or(1);
            let control = ty == TOKEN_CONTROL && (!byte_level || in_alphabet(t));
            let special = if control || roles.contains(&id) {
                true
            } else if ty == TOKEN_USER_DEFINED {
                false
            } else {
                continue;
            };
            added_tokens.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special
            }));
        }

        let pre_tokenizer = if byte_level {
            match self.pre.as_deref().and_then(pre_split) {
                Some(re) => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]}),
                None => {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
                }
            }
        } else {
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false})
        };
        let decoder = if byte_level {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true})
        } else {
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]})
        };
        let model = if byte_level {
            json!({"type": "BPE", "dropout": null, "unk_token": null,
                   "continuing_subword_prefix": "", "end_of_word_suffix": "",
                   "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                   "vocab": vocab, "merges": merges})
        } else {
            json!({"type": "BPE", "dropout": null, "unk_token": null,
                   "continuing_subword_prefix": null, "end_of_word_suffix": null,
                   "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                   "vocab": vocab, "merges": merges})
        };
        let tok = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self.post_processor(),
            "decoder": decoder,
            "model": model,
        });
        serde_json::to_string(&tok).map_err(|e| Error::Internal(format!("tokenizer json: {e}")))
    }

    /// `TemplateProcessing` adding BOS/EOS as the file asks (transformers' `update_post_processor`).
    fn post_processor(&self) -> Value {
        let tok = |id: Option<u32>, on: bool| {
            id.filter(|_| on)
                .and_then(|i| self.text(i).map(|t| (i, t.to_owned())))
        };
        let bos = tok(self.bos, self.add_bos);
        let eos = tok(self.eos, self.add_eos);
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Map::new();
        for (type_id, seq) in [(0, "A"), (1, "B")] {
            let mut v = Vec::new();
            if let Some((id, t)) = &bos {
                v.push(json!({"SpecialToken": {"id": t, "type_id": type_id}}));
                specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            }
            v.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
            if let Some((id, t)) = &eos {
                v.push(json!({"SpecialToken": {"id": t, "type_id": type_id}}));
                specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            }
            if type_id == 0 {
                single.extend(v.iter().cloned());
            }
            pair.extend(v);
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    }

    /// transformers' `generate_merges(vocab, scores)`: every split of every token into two
    /// vocabulary pieces, then a stable descending sort on `(score, len(left), len(right))`
    /// (lengths in characters).
    fn derive_merges<'a>(&'a self, vocab: &HashMap<&str, u32>) -> Vec<(&'a str, &'a str)> {
        // Ordered dict token → score: first position, last score.
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(self.tokens.len());
        let mut order: Vec<(&str, f32)> = Vec::with_capacity(self.tokens.len());
        for (t, &s) in self.tokens.iter().zip(&self.scores) {
            match first.get(t.as_str()) {
                Some(&p) => order[p].1 = s,
                None => {
                    first.insert(t, order.len());
                    order.push((t, s));
                }
            }
        }
        let mut merges: Vec<(&str, &str, f32, usize, usize)> = Vec::new();
        let mut local = Vec::new();
        for &(m, score) in &order {
            local.clear();
            for (i, _) in m.char_indices().skip(1) {
                let (l, r) = m.split_at(i);
                if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                    local.push((l, r, il, ir));
                }
            }
            local.sort_by_key(|&(_, _, il, ir)| (il, ir));
            for &(l, r, _, _) in &local {
                merges.push((l, r, score, l.chars().count(), r.chars().count()));
            }
        }
        merges.sort_by(|a, b| {
            (b.2, b.3, b.4)
                .partial_cmp(&(a.2, a.3, a.4))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        merges.into_iter().map(|(l, r, ..)| (l, r)).collect()
    }
}
