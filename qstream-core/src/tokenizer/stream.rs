//! UTF-8-safe incremental detokenization.
//!
//! Decoding one id at a time is wrong in two ways: byte-level BPE (and SentencePiece byte
//! fallback) can split one multi-byte character across tokens, and decoders that treat the
//! first token specially (SentencePiece's `▁` → strip the leading space) would drop spaces
//! between words. [`DecodeStream`] therefore decodes a small *window* of recent ids: the
//! window starts with a few already-emitted *context* ids, so `decode(window)` renders the
//! new ids exactly as `decode(all ids)` would, and only the part past what was already
//! emitted is returned. Text ending in U+FFFD (an incomplete character) is held back until
//! the character completes (the approach of HF tokenizers' `DecodeStream` and llama.cpp).
//!
//! Concatenating every [`step`](DecodeStream::step) result and the final
//! [`flush`](DecodeStream::flush) gives `decode(all ids)`, except for malformed byte
//! sequences: ones left incomplete for more than [`MAX_PENDING`] ids are emitted as U+FFFD
//! so memory stays bounded, and HF's `ByteFallback` decoder turns a whole run of `<0xNN>`
//! tokens into U+FFFDs when any byte of it is invalid, which text already emitted cannot
//! follow. Valid UTF-8 always streams exactly.

use super::Tokenizer;
use crate::Result;

/// Context ids (non-special) kept at the start of the window after it is trimmed.
const CONTEXT: usize = 4;
/// The window is trimmed back to its context when it grows past this many ids.
const TRIM_AT: usize = 16;
/// Held-back ids after which incomplete text is emitted anyway (as U+FFFD).
pub const MAX_PENDING: usize = 32;

/// Incremental detokenizer created by [`Tokenizer::decode_stream`].
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// Recent ids: context ids followed by ids not yet fully emitted.
    ids: Vec<u32>,
    /// Bytes of `decode(ids)` already accounted for (context text + emitted text).
    emitted: usize,
    /// Number of ids in `ids` up to the last point where the text ended on a whole character.
    clean: usize,
    /// Last `decode(ids)`.
    text: String,
}

impl<'a> DecodeStream<'a> {
    pub(super) fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        DecodeStream {
            tok,
            skip_special,
            ids: Vec::with_capacity(TRIM_AT + MAX_PENDING + 1),
            emitted: 0,
            clean: 0,
            text: String::new(),
        }
    }

    /// Feed one id; returns the text it completes, or `None` when nothing new is complete
    /// (a character is still partial, or the token renders as nothing).
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.text = self.tok.decode(&self.ids, self.skip_special)?;
        let incomplete = self.text.ends_with('\u{FFFD}');
        let force = self.ids.len() - self.clean >= MAX_PENDING;
        let stable = if incomplete && !force {
            self.text.trim_end_matches('\u{FFFD}').len()
        } else {
            self.text.len()
        };
        let out = self.take(stable);
        if !incomplete || force {
            self.clean = self.ids.len();
            if self.ids.len() > TRIM_AT {
                self.trim()?;
            }
        }
        Ok(out)
    }

    /// Emit whatever is still held back (an incomplete character renders as U+FFFD) and
    /// forget the window; the stream can be reused.
    pub fn flush(&mut self) -> Option<String> {
        let out = self.take(self.text.len());
        self.reset();
        out
    }

    /// Forget all state (start a new text).
    pub fn reset(&mut self) {
        self.ids.clear();
        self.text.clear();
        self.emitted = 0;
        self.clean = 0;
    }

    /// Text of `self.text[self.emitted..end]`, advancing `emitted`.
    fn take(&mut self, end: usize) -> Option<String> {
        // Decoders are prefix-stable in practice; should earlier text have changed, resume
        // at the next character boundary rather than slicing inside a character.
        let mut start = self.emitted.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        if end <= start {
            return None;
        }
        self.emitted = end;
        Some(self.text[start..end].to_string())
    }

    /// Drop old ids, keeping [`CONTEXT`] non-special ids (plus any special ids among them) as
    /// context for the next ones. Called only when the text ends on a whole character.
    ///
    /// The context must render as the tail of the current text: a context that starts
    /// inside a multi-byte character (or inside a byte-fallback run, which HF decodes as a
    /// whole) renders differently, so it is extended backwards until it does.
    fn trim(&mut self) -> Result<()> {
        let mut keep_from = self.ids.len();
        let mut n = 0;
        while keep_from > 0 && n < CONTEXT {
            keep_from -= 1;
            if !self.tok.is_special(self.ids[keep_from]) {
                n += 1;
            }
        }
        let mut ctx_text = self.tok.decode(&self.ids[keep_from..], self.skip_special)?;
        while keep_from > 0 && !self.text.ends_with(ctx_text.as_str()) {
            keep_from -= 1;
            ctx_text = self.tok.decode(&self.ids[keep_from..], self.skip_special)?;
        }
        self.ids.drain(..keep_from);
        self.text = ctx_text;
        self.emitted = self.text.len();
        self.clean = self.ids.len();
        Ok(())
    }
}
