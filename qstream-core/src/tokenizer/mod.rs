//! Text ↔ token ids.
//!
//! [`Tokenizer`] wraps a HuggingFace [`tokenizers::Tokenizer`] built from the `tokenizer.json`
//! stored in the model ([`TokenizerData::tokenizer_json`]; GGUF sources get one synthesised
//! by the importer), plus the model's special-token ids from [`ModelConfig`].
//!
//! Semantics follow HuggingFace: special tokens written in the text (`<|im_start|>`) are
//! recognised as single tokens, `add_special` runs the `tokenizer.json` post-processor, and
//! `decode` drops ids the vocabulary does not know. On top of that, `encode(.., true)`
//! prepends BOS when the model config asks for it (`add_bos`) and the post-processor did not
//! already add it (GGUF-derived `tokenizer.json` files may lack a post-processor).
//!
//! [`DecodeStream`] turns ids into text one at a time without ever emitting half a UTF-8
//! character (see [`stream`]).

use std::collections::HashSet;
use std::str::FromStr;

use crate::chat::{self, ChatMessage};
use crate::import::TokenizerData;
use crate::model::config::ModelConfig;
use crate::{Error, Result};

pub mod stream;

pub use stream::DecodeStream;

/// A model's tokenizer. `Send + Sync`; share it by reference.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// 1 + the largest id the vocabulary (with added tokens) knows.
    n_vocab: usize,
    bos: Option<u32>,
    add_bos: bool,
    eos_ids: Vec<u32>,
    /// Ids of added tokens marked `special`.
    special_ids: HashSet<u32>,
    chat_template: Option<String>,
    bos_text: String,
    eos_text: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos_ids", &self.eos_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Build the tokenizer from the model's stored tokenizer data and config.
    ///
    /// Fails with [`Error::Corrupt`] if `tokenizer.json` does not parse, or if the config's
    /// BOS/EOS ids are outside the vocabulary.
    pub fn from_data(data: &TokenizerData, config: &ModelConfig) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_str(&data.tokenizer_json)
            .map_err(|e| Error::corrupt(format!("tokenizer.json: {e}")))?;
        let n_vocab = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        if n_vocab == 0 {
            return Err(Error::corrupt("tokenizer.json: empty vocabulary"));
        }
        let in_vocab = |id: u32| (id as usize) < n_vocab.max(config.n_vocab);
        if let Some(b) = config.bos_token_id {
            if !in_vocab(b) {
                return Err(Error::corrupt(format!(
                    "bos_token_id {b} outside vocabulary ({n_vocab})"
                )));
            }
        }
        if let Some(&e) = config.eos_token_ids.iter().find(|&&e| !in_vocab(e)) {
            return Err(Error::corrupt(format!(
                "eos token id {e} outside vocabulary ({n_vocab})"
            )));
        }
        let special_ids = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        // Text of BOS / EOS for chat templates: the role table first, then the vocabulary.
        let role = |names: &[&str]| {
            data.special_tokens
                .iter()
                .find(|(r, _)| names.contains(&r.as_str()))
                .map(|(_, t)| t.clone())
        };
        let bos_text = role(&["bos", "bos_token"])
            .or_else(|| config.bos_token_id.and_then(|id| inner.id_to_token(id)))
            .unwrap_or_default();
        let eos_text = role(&["eos", "eos_token"])
            .or_else(|| {
                config
                    .eos_token_ids
                    .first()
                    .and_then(|&id| inner.id_to_token(id))
            })
            .unwrap_or_default();
        Ok(Tokenizer {
            inner,
            n_vocab,
            bos: config.bos_token_id,
            add_bos: config.add_bos,
            eos_ids: config.eos_token_ids.clone(),
            special_ids,
            chat_template: data.chat_template.clone(),
            bos_text,
            eos_text,
        })
    }

    /// Text → ids. `add_special`: run the post-processor (which may add BOS/EOS) and prepend
    /// BOS if the model config's `add_bos` is set and the ids do not already start with it.
    /// Special tokens written in `text` are always recognised.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(tok_err)?;
        let ids = enc.get_ids();
        match self.bos {
            Some(bos) if add_special && self.add_bos && ids.first() != Some(&bos) => {
                let mut v = Vec::with_capacity(ids.len() + 1);
                v.push(bos);
                v.extend_from_slice(ids);
                Ok(v)
            }
            _ => Ok(ids.to_vec()),
        }
    }

    /// Ids → text. `skip_special` drops special tokens (BOS, `<|im_end|>`, ...). Ids the
    /// vocabulary does not know are skipped (HuggingFace behaviour).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Vocabulary size (1 + the largest known id, added tokens included).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The BOS id, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end generation (EOS and end-of-turn tokens).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The vocabulary entry of `id` as stored (e.g. `Ġhello` for byte-level BPE, `▁hello`
    /// for SentencePiece, `<|im_start|>`); `None` if unknown. For display text use
    /// [`decode`](Self::decode) or [`decode_stream`](Self::decode_stream).
    pub fn token_to_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry (exact match), e.g. `"<|im_end|>"`.
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// The model's Jinja chat template, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Text of the BOS token for chat templates (`""` if none).
    pub fn bos_text(&self) -> &str {
        &self.bos_text
    }

    /// Text of the EOS token for chat templates (`""` if none).
    pub fn eos_text(&self) -> &str {
        &self.eos_text
    }

    /// Render the model's chat template (see [`chat::apply_chat_template`]).
    /// [`Error::InvalidArgument`] if the model has no template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tpl = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::InvalidArgument("the model has no chat template".to_string()))?;
        chat::apply_chat_template(
            tpl,
            messages,
            add_generation_prompt,
            &self.bos_text,
            &self.eos_text,
        )
    }

    /// A UTF-8-safe incremental detokenizer; feed it ids with [`DecodeStream::step`].
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special)
    }

    /// The wrapped HuggingFace tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests;
