/*
 * qstream.h — C API of QStream, a CPU inference engine for quantized LLMs (libqstream).
 *
 * Minimal session (every status checked; qs_last_error_message() explains failures):
 *
 *     qs_model *m = NULL; qs_context *c = NULL;
 *     qs_model_params mp = qs_model_default_params();
 *     if (qs_model_load("model.qsf", &mp, &m) != QS_STATUS_OK) { fprintf(stderr, "%s\n", qs_last_error_message()); ... }
 *     qs_context_params cp = qs_context_default_params();
 *     qs_context_new(m, &cp, &c);
 *     qs_token ids[512]; size_t n;
 *     qs_tokenize(m, "Hello", 5, true, ids, 512, &n);
 *     qs_context_decode(c, ids, n);
 *     qs_sampling_params sp = qs_sampling_default_params();
 *     qs_sampler *s = NULL; qs_sampler_new(&sp, &s);
 *     for (int i = 0; i < 32; i++) {
 *         qs_token t; qs_sampler_sample(s, c, &t);
 *         if (qs_model_is_eos(m, t)) break;
 *         char piece[64]; size_t len; qs_token_to_piece(m, t, piece, sizeof piece, &len);
 *         fwrite(piece, 1, len, stdout);
 *         qs_context_decode(c, &t, 1);
 *     }
 *     qs_sampler_free(s); qs_context_free(c); qs_model_free(m);
 *
 * Or in one call with streaming: qs_generate(c, prompt, len, &gen_params, on_piece, userdata, &result).
 *
 * CONVENTIONS
 *
 * Handles. qs_model, qs_context and qs_sampler are opaque. Each *_new / *_load has a
 * matching *_free (NULL is a no-op). qs_model is reference counted inside: a context holds
 * its own reference, so qs_model_free may be called while contexts are alive (the weights
 * go with the last context). qs_context and qs_sampler are exclusively owned.
 *
 * Status codes. Every fallible function returns qs_status (int32_t), one of QS_STATUS_*.
 * Numbers are grouped and never reused:
 *   0   QS_STATUS_OK
 *   1xx argument:  100 NULL_ARGUMENT (a required pointer is NULL), 101 INVALID_ARGUMENT
 *                  (out of range / malformed / bad struct_size / unknown enum value /
 *                  tokenizer or chat-template failure), 102 BUFFER_TOO_SMALL (needed size
 *                  in *out_len), 103 INVALID_UTF8
 *   2xx file:      200 NOT_FOUND, 201 IO, 202 BAD_MAGIC, 203 UNSUPPORTED_VERSION,
 *                  204 CORRUPT (truncated, bad offsets/shapes), 205 CHECKSUM
 *   3xx resources: 300 OUT_OF_MEMORY, 301 CONTEXT_FULL (nothing changed),
 *                  302 BUDGET_EXCEEDED (qs_model_params.ram_budget_bytes)
 *   4xx runtime:   400 CANCELLED (a progress callback returned false),
 *                  401 UNSUPPORTED_ARCH, 402 UNSUPPORTED_QUANT,
 *                  403 BUSY (the context is used by another call at the same time)
 *   9xx:           900 PANIC (a bug caught at the boundary; the handle is poisoned and every
 *                  later call on it returns PANIC — free it), 901 INTERNAL
 * qs_status_str(code) gives the name. Getters that cannot fail return a value directly
 * and return 0 / NULL / false / QS_TOKEN_NULL when given a NULL handle.
 *
 * Errors. qs_last_error_message() returns the detailed message (path, offset, tensor) of
 * the last failing call on the calling thread; valid until that thread's next failing call
 * or qs_clear_last_error(). Success does not clear it.
 *
 * Arguments. NULL for a required pointer is QS_STATUS_NULL_ARGUMENT. A pointer paired with
 * a length or capacity may be NULL only when that length is 0. Outputs are written only on
 * success (except *out_len with BUFFER_TOO_SMALL); there are no in/out parameters. Text is
 * UTF-8 with explicit byte lengths; NUL-terminated only where documented (paths, chat
 * message fields, stop strings, static strings, and text written to caller buffers).
 *
 * Buffers. Functions that fill caller memory take (out, capacity, size_t *out_len).
 * Token arrays: *out_len = number of tokens; BUFFER_TOO_SMALL when capacity < that count,
 * with the count in *out_len. Text: written NUL-terminated, *out_len = bytes without the
 * NUL; BUFFER_TOO_SMALL when capacity < bytes + 1, with bytes + 1 in *out_len. Call once with
 * (NULL, 0) to learn the size.
 *
 * Params structs. Created by qs_*_default_params(); the first field, uint32_t struct_size,
 * is set to the size the header knows, so fields can be appended without breaking old
 * callers. Only the sizes of published versions of a struct are accepted (any other value,
 * e.g. one ending inside a field, is INVALID_ARGUMENT). Every argument of a call is checked
 * before it does any work. Comments give each field's default and units (0 usually means
 * "from the model").
 * Enum-valued fields and arguments are uint32_t and validated (unknown → INVALID_ARGUMENT).
 *
 * Static strings (qs_version, qs_status_str, qs_model_arch, qs_quant_type_name) live for the
 * whole program and are never freed.
 *
 * Thread safety. Functions taking const qs_model * are safe to call concurrently from any
 * thread (the model is immutable). Many contexts may share one model, each used by one
 * thread at a time (a concurrent second call on the same context returns QS_STATUS_BUSY).
 * qs_context_cancel may be called from any thread at any time while the context is alive.
 * A qs_sampler is used by one thread at a time (a concurrent second call returns
 * QS_STATUS_BUSY). qs_log_set is global and thread-safe; the log callback runs with no
 * library lock held. The last error message is per thread.
 *
 * Callbacks receive userdata first, must not unwind (no C++ exceptions, no longjmp) and
 * must not call functions on the context that is running them (except qs_context_cancel).
 *
 * Panics never cross the boundary: every export catches them (see QS_STATUS_PANIC).
 */


#ifndef QSTREAM_H
#define QSTREAM_H

/* Generated by cbindgen from qstream-capi. Do not edit by hand: edit the Rust sources and run
   QSTREAM_BLESS=1 cargo test -p qstream-capi --test header_current */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QS_VERSION_MAJOR 0
#define QS_VERSION_MINOR 1
#define QS_VERSION_PATCH 0
#define QS_VERSION_STRING "0.1.0"

#ifndef QS_API
#  if defined(_WIN32) && !defined(QS_STATIC)
#    define QS_API __declspec(dllimport)
#  elif defined(__GNUC__) || defined(__clang__)
#    define QS_API __attribute__((visibility("default")))
#  else
#    define QS_API
#  endif
#endif

#ifndef QS_DEPRECATED
#  if defined(__GNUC__) || defined(__clang__)
#    define QS_DEPRECATED(msg) __attribute__((deprecated(msg)))
#  elif defined(_MSC_VER)
#    define QS_DEPRECATED(msg) __declspec(deprecated(msg))
#  else
#    define QS_DEPRECATED(msg)
#  endif
#endif


// ABI version: bumped on every incompatible change; also the SONAME suffix
// (`libqstream.so.0`). Compare `qs_abi_version()` with `QS_ABI_VERSION` at start-up.
#define QS_ABI_VERSION 0

// Named status values. Numbers are grouped by area and never reused: 0 success,
// 1xx argument, 2xx file/format, 3xx resources, 4xx runtime, 9xx panic/internal.
enum qs_status_code
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  // Success.
  QS_STATUS_OK = 0,
  // A required pointer argument was NULL.
  QS_STATUS_NULL_ARGUMENT = 100,
  // An argument is out of range or malformed (bad token id, unknown enum value,
  // bad `struct_size`, tokenizer error, model without chat template, ...).
  QS_STATUS_INVALID_ARGUMENT = 101,
  // An output buffer is too small; the needed size was written to `*out_len`.
  QS_STATUS_BUFFER_TOO_SMALL = 102,
  // A text argument is not valid UTF-8.
  QS_STATUS_INVALID_UTF8 = 103,
  // The file does not exist.
  QS_STATUS_NOT_FOUND = 200,
  // Any other I/O error.
  QS_STATUS_IO = 201,
  // The file is not a QSF (or GGUF / HF) file.
  QS_STATUS_BAD_MAGIC = 202,
  // The file's format version is newer than this library.
  QS_STATUS_UNSUPPORTED_VERSION = 203,
  // The file is structurally invalid (truncated, bad offsets or shapes).
  QS_STATUS_CORRUPT = 204,
  // A checksum did not match.
  QS_STATUS_CHECKSUM = 205,
  // An allocation failed.
  QS_STATUS_OUT_OF_MEMORY = 300,
  // The context window cannot hold the tokens (nothing was changed).
  QS_STATUS_CONTEXT_FULL = 301,
  // The weights exceed `qs_model_params.ram_budget_bytes`.
  QS_STATUS_BUDGET_EXCEEDED = 302,
  // The operation was cancelled (a progress callback returned false).
  QS_STATUS_CANCELLED = 400,
  // The model architecture is not supported.
  QS_STATUS_UNSUPPORTED_ARCH = 401,
  // A tensor / quantization type is not supported.
  QS_STATUS_UNSUPPORTED_QUANT = 402,
  // The context is in use by another call (another thread, or a callback re-entering).
  QS_STATUS_BUSY = 403,
  // A panic was caught inside the library; the handle involved is poisoned and every
  // later call on it returns this code.
  QS_STATUS_PANIC = 900,
  // An internal invariant did not hold (a bug).
  QS_STATUS_INTERNAL = 901,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_status_code qs_status_code;
#else
typedef int32_t qs_status_code;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// Named log levels.
enum qs_log_level_value
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  // Fine detail (every failing call is logged at this level).
  QS_LOG_DEBUG = 0,
  // Progress (model loaded, ...).
  QS_LOG_INFO = 1,
  // Something unexpected that did not fail the call.
  QS_LOG_WARN = 2,
  // A caught panic or another serious problem.
  QS_LOG_ERROR = 3,
  // Log nothing (only as `min_level`).
  QS_LOG_OFF = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_log_level_value qs_log_level_value;
#else
typedef uint32_t qs_log_level_value;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// KV cache element types (`qs_context_params.kv_type`).
enum qs_kv_type
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  // 32-bit floats (exact).
  QS_KV_F32 = 0,
  // IEEE half precision (half the memory).
  QS_KV_F16 = 1,
  // bfloat16.
  QS_KV_BF16 = 2,
  // Symmetric 8-bit blocks of 32 values (8.5 bits per value).
  QS_KV_Q8 = 3,
  // Asymmetric 4-bit blocks of 32 (5 bits per value).
  QS_KV_Q4 = 4,
  // Asymmetric 3-bit blocks of 32 (4 bits per value).
  QS_KV_Q3 = 5,
  // Asymmetric 2-bit blocks of 32 (3 bits per value).
  QS_KV_Q2 = 6,
  // Logarithmic 8-bit code (sign + 7-bit inverse magnitude, IntLLM's QINS; 8.5 bits).
  QS_KV_QINS8 = 7,
  // `QS_KV_Q8` after a randomized Hadamard rotation along head_dim.
  QS_KV_Q8H = 8,
  // `QS_KV_Q4` after a randomized Hadamard rotation along head_dim.
  QS_KV_Q4H = 9,
  // `QS_KV_Q3` after a randomized Hadamard rotation along head_dim.
  QS_KV_Q3H = 10,
  // `QS_KV_Q2` after a randomized Hadamard rotation along head_dim.
  QS_KV_Q2H = 11,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_kv_type qs_kv_type;
#else
typedef uint32_t qs_kv_type;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// Why `qs_generate` stopped (`qs_generate_result.stop_reason`).
enum qs_stop_reason
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  // `max_tokens` generated, or the context is full.
  QS_STOP_MAX_TOKENS = 0,
  // An end-of-sequence token was sampled (it is reported to the callback with an
  // empty piece).
  QS_STOP_EOS = 1,
  // A stop string appeared (it is not part of the streamed text).
  QS_STOP_STRING = 2,
  // The callback returned false.
  QS_STOP_CALLBACK = 3,
  // `qs_context_cancel` was called.
  QS_STOP_CANCELLED = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_stop_reason qs_stop_reason;
#else
typedef uint32_t qs_stop_reason;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// Tensor storage types (`uint32_t`, the QSF on-disk ids) for `qs_convert_params.quant_type`,
// `qs_model_quant_type` and `qs_quant_type_name`.
enum qs_quant_type
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  QS_QUANT_Q2 = 0,
  QS_QUANT_Q3 = 2,
  QS_QUANT_Q4 = 3,
  QS_QUANT_Q4_SYM = 4,
  QS_QUANT_Q8 = 6,
  QS_QUANT_F16 = 7,
  QS_QUANT_Q2_OUTLIER = 9,
  QS_QUANT_Q4_OUTLIER = 10,
  QS_QUANT_Q3_OUTLIER = 11,
  QS_QUANT_F32 = 12,
  QS_QUANT_BF16 = 13,
  QS_QUANT_MXFP4 = 14,
  // `qs_convert` only: copy tensors whose source type has a bit-exact QSF equivalent,
  // requantize the rest to q8.
  QS_QUANT_KEEP = 255,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_quant_type qs_quant_type;
#else
typedef uint32_t qs_quant_type;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// Mixed-precision presets for `qs_convert_params.preset` (the CLI's `--quant q4_m` etc.).
enum qs_preset
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  // No preset: every weight matrix gets `quant_type`.
  QS_PRESET_NONE = 0,
  // `q4_m`: embeddings/output and ffn_down q8, every other matrix q4 B=64.
  QS_PRESET_Q4_M = 1,
  // `q3_m`: embeddings/output q8, attention and ffn_down q4, ffn_up q4 B=64, ffn_gate q3.
  QS_PRESET_Q3_M = 2,
  // `q2_m`: as q3_m with attn_q/k/output q3 and ffn_gate q2_outlier.
  QS_PRESET_Q2_M = 3,
  // `<type>+e8`: every matrix `quant_type` (a quantized type) except the token
  // embedding and output matrix, kept at q8.
  QS_PRESET_EMBD_Q8 = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum qs_preset qs_preset;
#else
typedef uint32_t qs_preset;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

// A standalone KV cache + attention object (opaque). One thread at a time: a call that
// finds it in use by another thread returns `QS_STATUS_BUSY`.
typedef struct qs_attn_cache qs_attn_cache;

// One conversation (opaque): KV cache, last logits. One thread at a time; many contexts
// may share a model. Holds its own reference to the model.
typedef struct qs_context qs_context;

// A loaded model (opaque). Immutable and shared: every function taking
// `const qs_model *` may be called from any thread concurrently.
typedef struct qs_model qs_model;

// A sampler (opaque): sampling settings + seeded PRNG. One thread at a time: a
// concurrent second call on the same sampler returns `QS_STATUS_BUSY`.
typedef struct qs_sampler qs_sampler;

// Return type of every fallible function: one of the `QS_STATUS_*` values
// ([`qs_status_code`]). An integer typedef so the ABI does not depend on enum width.
typedef int32_t qs_status;

// Log severity (`QS_LOG_*`), passed as `uint32_t`.
typedef uint32_t qs_log_level;

// One log message, valid only during the callback. Strings are UTF-8 and NOT
// NUL-terminated.
typedef struct {
  // `sizeof(qs_log_record)` as known to the library; fields may be appended.
  uint32_t struct_size;
  // A `QS_LOG_*` value.
  qs_log_level level;
  // Where the message comes from, e.g. "qstream::capi".
  const char *target;
  size_t target_len;
  // The message.
  const char *message;
  size_t message_len;
} qs_log_record;

// Log callback: `userdata` first, then the record (valid only during the call).
typedef void (*qs_log_cb)(void *userdata, const qs_log_record *record);

// Options for `qs_attn_cache_new`. Get one from `qs_attn_cache_default_params()` and set
// at least `head_dim`, `n_kv_heads`, `n_q_heads` and `capacity`.
typedef struct {
  // `sizeof(qs_attn_cache_params)`; set by `qs_attn_cache_default_params()`.
  uint32_t struct_size;
  // Values per head vector (a multiple of 32, at most 512, for the quantized types).
  // Default 0 (must be set).
  uint32_t head_dim;
  // Key/value heads. Default 0 (must be set).
  uint32_t n_kv_heads;
  // Query heads, a multiple of `n_kv_heads`; query head `h` reads KV head
  // `h / (n_q_heads / n_kv_heads)`. Default 0 (must be set).
  uint32_t n_q_heads;
  // Positions the cache holds (allocated up front). Default 0 (must be set).
  uint32_t capacity;
  // Element type of the keys, a `QS_KV_*` value. Default `QS_KV_F32`.
  uint32_t type_k;
  // Element type of the values, a `QS_KV_*` value. Default `QS_KV_F32`.
  uint32_t type_v;
} qs_attn_cache_params;

// Sampling options. Get one from `qs_sampling_default_params()` (temperature 0.7,
// top-k 40, top-p 0.9, seed 42); set `temperature = 0` for greedy decoding.
typedef struct {
  // `sizeof(qs_sampling_params)`; set by `qs_sampling_default_params()`.
  uint32_t struct_size;
  // Softmax temperature; 0 = greedy (argmax). Default 0.7.
  float temperature;
  // Keep the `top_k` most likely tokens; 0 = off. Default 40.
  uint32_t top_k;
  // Nucleus mass; 1 = off. Default 0.9.
  float top_p;
  // Drop tokens below `min_p × p_max`; 0 = off. Default 0.
  float min_p;
  // Repetition penalty (llama.cpp semantics); 1 = off. Default 1.
  float repeat_penalty;
  // Subtracted once from every token present in the window; 0 = off. Default 0.
  float presence_penalty;
  // Subtracted per occurrence in the window; 0 = off. Default 0.
  float frequency_penalty;
  // Penalty window in tokens; 0 = none. Default 64.
  uint32_t repeat_last_n;
  // PRNG seed: same seed, same tokens. Default 42.
  uint64_t seed;
} qs_sampling_params;

// Options for `qs_context_new`. Get one from `qs_context_default_params()`.
typedef struct {
  // `sizeof(qs_context_params)`; set by `qs_context_default_params()`.
  uint32_t struct_size;
  // Context size in tokens; 0 = the model's training context capped at 4096. Default 0.
  uint32_t n_ctx;
  // Most tokens per forward pass during prompt processing; 0 = 512. Default 0.
  uint32_t n_batch;
  // Threads for this context's forward passes; 0 = the model's pool. Default 0.
  uint32_t n_threads;
  // KV cache element type, a `QS_KV_*` value. Default `QS_KV_F32`.
  uint32_t kv_type;
  // Element type of the cached keys, a `QS_KV_*` value; -1 = `kv_type`. Default -1.
  int32_t type_k;
  // Element type of the cached values, a `QS_KV_*` value; -1 = `kv_type`. Default -1.
  int32_t type_v;
} qs_context_params;

// A token id.
typedef uint32_t qs_token;

// Options for `qs_generate`. Get one from `qs_generate_default_params()`.
typedef struct {
  // `sizeof(qs_generate_params)`; set by `qs_generate_default_params()`.
  uint32_t struct_size;
  // Most tokens to generate. Default 256.
  uint32_t max_tokens;
  // Sampling options; NULL = `qs_sampling_default_params()`. Default NULL.
  const qs_sampling_params *sampling;
  // `n_stop_strings` NUL-terminated UTF-8 strings that end generation; NULL when
  // `n_stop_strings` is 0. Default none.
  const char *const *stop_strings;
  size_t n_stop_strings;
  // Stop at the model's end-of-sequence tokens. Default true.
  bool stop_on_eos;
  // `qs_generate` (text prompt) only: add BOS etc. when the context is empty.
  // Default true.
  bool add_special;
} qs_generate_params;

// Streaming callback: `piece` is `len` bytes of new UTF-8 text (NUL-terminated for
// convenience; may be empty while a character or a possible stop string is incomplete),
// `token` the sampled id. Return false to stop. It must not call functions on the same
// context except `qs_context_cancel` (they return `QS_STATUS_BUSY`).
typedef bool (*qs_piece_cb)(void *userdata, const char *piece, size_t len, qs_token token);

// Outcome of `qs_generate`. Set `struct_size = sizeof(qs_generate_result)` before the
// call; the library writes at most that many bytes.
typedef struct {
  uint32_t struct_size;
  // A `QS_STOP_*` value.
  uint32_t stop_reason;
  // Prompt tokens decoded by this call.
  uint32_t n_prompt;
  // Tokens sampled (including an EOS that ended generation).
  uint32_t n_generated;
  // Seconds spent on the prompt.
  double prompt_secs;
  // Seconds spent generating.
  double gen_secs;
} qs_generate_result;

// One per-role type override (`qs_convert_params.tensor_types`; the CLI's
// `--tensor-type ROLE=TYPE[:BLOCK]`).
typedef struct {
  // NUL-terminated role: an in-layer name (`attn_v`, `ffn_down`, ...) or a global name
  // (`token_embd`, `output`, `blk.3.ffn_up`).
  const char *role;
  // A `QS_QUANT_*` value (not `QS_QUANT_KEEP`).
  uint32_t quant_type;
  // Values per block; 0 = `block_size` when valid for the type, else the type's default.
  uint32_t block_size;
} qs_tensor_type;

// Options for `qs_convert`. Get one from `qs_convert_default_params()`.
//
// Published versions (`struct_size`): 24 bytes (up to `n_threads`), 28 (up to
// `outlier_per_tensor`), and the full struct (presets, rotation, overrides, calibration).
typedef struct {
  // `sizeof(qs_convert_params)`; set by `qs_convert_default_params()`.
  uint32_t struct_size;
  // Target type of weight matrices, a `QS_QUANT_*` value. Default `QS_QUANT_Q4`.
  uint32_t quant_type;
  // Values per block for q2/q3/q4/q4_sym: 32, 64, 128 or 256. Default 32.
  uint32_t block_size;
  // Fraction of the *_OUTLIER tensors' weights kept as FP16, in [0, 0.5), spread over
  // those tensors by the quantization error it removes (the CLI's `--outlier-alloc
  // global`). Default 0.005.
  float outlier_frac;
  // LZ4-compress each layer. Default false.
  bool compress;
  // Worker threads; 0 = all cores. Default 0.
  uint32_t n_threads;
  // Keep `outlier_frac` of each *_OUTLIER tensor's weights instead of spreading the
  // budget over all of them (the CLI's `--outlier-alloc tensor`). Default false.
  bool outlier_per_tensor;
  // A `QS_PRESET_*` value; anything but `QS_PRESET_NONE` replaces `quant_type`'s plan
  // (`QS_PRESET_EMBD_Q8` uses `quant_type` for the other matrices). Default
  // `QS_PRESET_NONE`.
  uint32_t preset;
  // Incoherence rotation of the matrices quantized below 8 bits (the CLI's `--rotate
  // N`): 0 = off, else the largest group size, a power of two ≥ 2. Default 0.
  uint32_t rotate;
  // `n_tensor_types` per-role overrides, applied before the preset/type; NULL when
  // `n_tensor_types` is 0. Default none.
  const qs_tensor_type *tensor_types;
  size_t n_tensor_types;
  // NUL-terminated path of a UTF-8 calibration text (the CLI's `--calibrate`): the source
  // is converted to q8 in a temporary file and run over it, and each matrix's
  // quantization error is weighted by its inputs' mean squared activations. NULL = none.
  // Default NULL.
  const char *calibration_path;
  // NUL-terminated path of an activation statistics file (`--imatrix`): written after
  // calibrating on `calibration_path`, read without it. NULL = none. Default NULL.
  const char *imatrix_path;
  // GPTQ error feedback for the q2/q3/q4/q4_sym matrices (`--gptq`): needs
  // `calibration_path` or `hessian_path`; not with `rotate`. Default false.
  bool gptq;
  // With `gptq`: columns in decreasing order of input energy (`--gptq-act-order`).
  // Default false.
  bool gptq_act_order;
  // NUL-terminated path of an input second-moment file for `gptq` (`--hessian`): written
  // after calibrating with `gptq`, read without `calibration_path`. NULL = none.
  // Default NULL.
  const char *hessian_path;
  // Calibration chunk length in tokens (≥ 4). Default 256.
  uint32_t calib_ctx;
  // Calibrate on at most this many chunks; 0 = all. Default 32.
  uint32_t calib_chunks;
} qs_convert_params;

// Progress callback: `done` of `total` steps, `what` a NUL-terminated description valid
// during the call. Return false to cancel (the call then returns `QS_STATUS_CANCELLED`).
typedef bool (*qs_progress_cb)(void *userdata, size_t done, size_t total, const char *what);

// Options for `qs_model_load`. Get one from `qs_model_default_params()`.
typedef struct {
  // `sizeof(qs_model_params)`; set by `qs_model_default_params()`.
  uint32_t struct_size;
  // Memory-map the file (zero copy) instead of reading it. Default true.
  bool use_mmap;
  // Verify every checksum while loading. Default false.
  bool check_crc;
  // Worker threads of the model's pool; 0 = all cores. Default 0.
  uint32_t n_threads;
  // Refuse to load (`QS_STATUS_BUDGET_EXCEEDED`) when the weights take more bytes than
  // this; 0 = no limit. Default 0.
  uint64_t ram_budget_bytes;
  // Called before (0/1) and after (1/1) loading; return false to cancel. May be NULL.
  qs_progress_cb progress_cb;
  // Passed to `progress_cb`.
  void *progress_userdata;
} qs_model_params;

// One chat message: NUL-terminated UTF-8 `role` ("system", "user", "assistant") and
// `content`.
typedef struct {
  const char *role;
  const char *content;
} qs_chat_message;







// "No token" (returned by `qs_model_bos` / `qs_model_eos` when the model has none).
#define QS_TOKEN_NULL UINT32_MAX

// Every code, for `qs_status_str` and tests.
#define qs_status_code_ALL { QS_STATUS_OK, QS_STATUS_NULL_ARGUMENT, QS_STATUS_INVALID_ARGUMENT, QS_STATUS_BUFFER_TOO_SMALL, QS_STATUS_INVALID_UTF8, QS_STATUS_NOT_FOUND, QS_STATUS_IO, QS_STATUS_BAD_MAGIC, QS_STATUS_UNSUPPORTED_VERSION, QS_STATUS_CORRUPT, QS_STATUS_CHECKSUM, QS_STATUS_OUT_OF_MEMORY, QS_STATUS_CONTEXT_FULL, QS_STATUS_BUDGET_EXCEEDED, QS_STATUS_CANCELLED, QS_STATUS_UNSUPPORTED_ARCH, QS_STATUS_UNSUPPORTED_QUANT, QS_STATUS_BUSY, QS_STATUS_PANIC, QS_STATUS_INTERNAL, }

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// Library version ("0.1.0"): a static string, never freed.
QS_API const char *qs_version(void);

// ABI version of the loaded library (equal to `QS_ABI_VERSION` of a matching header).
QS_API uint32_t qs_abi_version(void);

// Static name of a status code ("QS_STATUS_CORRUPT"); "QS_STATUS_UNKNOWN" for a value
// that is not a `QS_STATUS_*`. Never freed.
QS_API const char *qs_status_str(qs_status status);

// Detailed message of the last failing call on the calling thread (with path, offset or
// tensor name where known); "" when none. Valid until this thread's next failing call
// or `qs_clear_last_error`. Successful calls do not clear it.
QS_API const char *qs_last_error_message(void);

// Clear the calling thread's last error message.
QS_API void qs_clear_last_error(void);

// Route log messages at `min_level` (a `QS_LOG_*` value) or above to `cb` (NULL =
// stderr, the default, with `QS_LOG_WARN`). Global and thread-safe: returns once
// callbacks running on other threads have returned, so the old `userdata` may then be
// freed. `cb` runs with no library lock held and may call any function, `qs_log_set`
// included (messages logged by calls made inside `cb` are dropped).
// `QS_STATUS_INVALID_ARGUMENT` for an unknown level.
QS_API qs_status qs_log_set(qs_log_cb cb, void *userdata, qs_log_level min_level);

// Set the activation precision of the integer kernels for the whole process: 16 (the
// default: next tokens agree with the exact f32 path) or 8 (llama.cpp's `Q8_1` scheme:
// faster, lower next-token agreement; measured in docs/benchmarks.md). Overrides the environment
// variable `QSTREAM_ACT_BITS`. Global: applies to decodes started afterwards; must not race
// with running decodes. `QS_STATUS_INVALID_ARGUMENT` for any other value.
QS_API qs_status qs_set_act_bits(uint32_t bits);

// The activation precision in use (8 or 16; see `qs_set_act_bits`).
QS_API uint32_t qs_act_bits(void);

// Defaults for `qs_attn_cache_new` (sizes 0, K and V `QS_KV_F32`).
QS_API qs_attn_cache_params qs_attn_cache_default_params(void);

// Create an empty cache of `capacity` positions, K and V each in its own `QS_KV_*` type.
// Free it with `qs_attn_cache_free`. `QS_STATUS_INVALID_ARGUMENT` for a zero size,
// `n_q_heads` not a multiple of `n_kv_heads`, an unknown type, or a `head_dim` a
// quantized type cannot take; `QS_STATUS_OUT_OF_MEMORY` when it cannot be allocated.
//
// # Safety
// `params` valid (see `struct_size`); `out_cache` writable.
QS_API qs_status qs_attn_cache_new(const qs_attn_cache_params *params, qs_attn_cache **out_cache);

// Free a cache (NULL is a no-op). Must not race with another call on it.
//
// # Safety
// `cache` NULL or a handle from `qs_attn_cache_new`, not used afterwards.
QS_API void qs_attn_cache_free(qs_attn_cache *cache);

// Append the keys and values of `n_tokens` positions. `k` and `v` are row-major float
// arrays `[n_tokens][n_kv_heads][head_dim]`, read during the call only (the cache keeps
// its own, possibly quantized, copy). `QS_STATUS_INVALID_ARGUMENT` (nothing appended)
// when they do not fit in the remaining capacity.
//
// # Safety
// `cache` live; `k` and `v` each hold `n_tokens · n_kv_heads · head_dim` floats.
QS_API
qs_status qs_attn_cache_append(const qs_attn_cache *cache,
                               const float *k,
                               const float *v,
                               size_t n_tokens);

// Attention of `n_tokens` queries against the cache. `q` and `out` are row-major float
// arrays `[n_tokens][n_q_heads][head_dim]` (the caller owns both; they must not overlap).
// The queries are the last `n_tokens` cached positions (append their K/V first): with
// `causal`, query `i` sees positions `0 ..= len − n_tokens + i`; without, every cached
// position. `scale` multiplies the scores; 0 means `1/sqrt(head_dim)`. Softmax is f32;
// quantized K/V are read in the integer domain without a dequantized copy.
// `QS_STATUS_INVALID_ARGUMENT` when `n_tokens` exceeds the cached positions.
//
// # Safety
// `cache` live; `q` holds and `out` has room for `n_tokens · n_q_heads · head_dim` floats.
QS_API
qs_status qs_attn_cache_attend(const qs_attn_cache *cache,
                               const float *q,
                               size_t n_tokens,
                               bool causal,
                               float scale,
                               float *out);

// Keep the first `n_tokens` positions and drop the rest (`n_tokens` ≤ the cached count).
//
// # Safety
// `cache` live.
QS_API qs_status qs_attn_cache_truncate(const qs_attn_cache *cache, size_t n_tokens);

// Cached positions (0 for NULL or a cache in use by another thread).
//
// # Safety
// `cache` NULL or live.
QS_API size_t qs_attn_cache_len(const qs_attn_cache *cache);

// Bytes the cache holds for K and V (its full capacity; 0 for NULL or a cache in use by
// another thread).
//
// # Safety
// `cache` NULL or live.
QS_API size_t qs_attn_cache_memory_bytes(const qs_attn_cache *cache);

// Default sampling options (see the field comments).
QS_API qs_sampling_params qs_sampling_default_params(void);

// Default context options (see the field comments).
QS_API qs_context_params qs_context_default_params(void);

// Create a context on `model`. It keeps the model alive: `qs_model_free` may be called
// before `qs_context_free`.
//
// # Safety
// `model` live; `params` valid; `out_ctx` writable.
QS_API
qs_status qs_context_new(const qs_model *model,
                         const qs_context_params *params,
                         qs_context **out_ctx);

// Free a context (NULL is a no-op). Must not race with another call on it.
//
// # Safety
// `ctx` NULL or a handle from `qs_context_new`, not used afterwards.
QS_API void qs_context_free(qs_context *ctx);

// Append `n_tokens` ids to the context and compute the logits of the last one.
// `QS_STATUS_CONTEXT_FULL` (nothing changed) when they do not fit;
// `QS_STATUS_INVALID_ARGUMENT` for `n_tokens == 0` or an id ≥ n_vocab.
//
// # Safety
// `tokens` points to `n_tokens` ids.
QS_API qs_status qs_context_decode(qs_context *ctx, const qs_token *tokens, size_t n_tokens);

// Logits of the last token in the context: `*out_logits` points to `*out_n_vocab` floats
// owned by the context, valid until the next call that changes it (decode, generate, reset,
// truncate, free). Zeros before the first decode; recomputed (one forward pass) after a
// `qs_context_truncate`, never those of a removed position.
//
// # Safety
// Output pointers writable.
QS_API qs_status qs_context_logits(qs_context *ctx, const float **out_logits, size_t *out_n_vocab);

// Forget everything in the context (KV cache and logits).
//
// # Safety
// `ctx` NULL or live.
QS_API qs_status qs_context_reset(qs_context *ctx);

// Keep only the first `n` positions (no-op when `n ≥ n_past`). The logits of the new last
// token are recomputed when next needed (`qs_context_logits`, `qs_sampler_sample`,
// `qs_generate` with an empty prompt).
//
// # Safety
// `ctx` NULL or live.
QS_API qs_status qs_context_truncate(qs_context *ctx, size_t n);

// Tokens currently in the context (0 when `ctx` is NULL or busy).
//
// # Safety
// `ctx` NULL or live.
QS_API size_t qs_context_n_past(const qs_context *ctx);

// Context capacity in tokens (0 when `ctx` is NULL or busy).
//
// # Safety
// `ctx` NULL or live.
QS_API size_t qs_context_n_ctx(const qs_context *ctx);

// Ask the `qs_generate` or `qs_context_decode` running on `ctx` to stop — during the prompt
// (between chunks of at most 128 tokens; the context is then left as before the call) or
// before the next token (the result reports `QS_STOP_CANCELLED`; `qs_context_decode`
// returns `QS_STATUS_CANCELLED`). Callable from any thread while another thread uses the
// context; only sets an atomic flag (async-signal-safe for a valid `ctx`). A cancel issued
// while no call runs stops the next one; the call it stops consumes it.
//
// # Safety
// `ctx` NULL or live (not freed concurrently).
QS_API qs_status qs_context_cancel(const qs_context *ctx);

// The model of a context (borrowed pointer is not given out; this returns a new handle
// to free with `qs_model_free`).
//
// # Safety
// `ctx` live; `out_model` writable.
QS_API qs_status qs_context_model(const qs_context *ctx, qs_model **out_model);

// Create a sampler from `params`.
//
// # Safety
// `params` valid; `out_sampler` writable.
QS_API qs_status qs_sampler_new(const qs_sampling_params *params, qs_sampler **out_sampler);

// Sample the next token from `ctx`'s last logits (penalties look at the context's
// tokens). `QS_STATUS_INVALID_ARGUMENT` before the first decode. Does not decode the
// token: pass it to `qs_context_decode` to continue. `QS_STATUS_BUSY` when the sampler or
// the context is in use by another call.
//
// # Safety
// `sampler`, `ctx` live; `out_token` writable.
QS_API qs_status qs_sampler_sample(qs_sampler *sampler, qs_context *ctx, qs_token *out_token);

// Free a sampler (NULL is a no-op).
//
// # Safety
// `sampler` NULL or a handle from `qs_sampler_new`, not used afterwards.
QS_API void qs_sampler_free(qs_sampler *sampler);

// Default generation options (see the field comments).
QS_API qs_generate_params qs_generate_default_params(void);

// Tokenize `prompt` (UTF-8, `prompt_len` bytes; may be empty to continue from the
// context's last logits), decode it, then sample up to `params->max_tokens` tokens,
// streaming each to `cb` (NULL = no streaming). `out_result` may be NULL. The last
// sampled token is not decoded into the context. `QS_STATUS_CONTEXT_FULL` when the
// prompt does not fit.
//
// # Safety
// Pointers valid as documented; `cb` must not unwind (no C++ exceptions).
QS_API
qs_status qs_generate(qs_context *ctx,
                      const char *prompt,
                      size_t prompt_len,
                      const qs_generate_params *params,
                      qs_piece_cb cb,
                      void *userdata,
                      qs_generate_result *out_result);

// As `qs_generate` with a prompt of token ids (`n_tokens` may be 0 to continue).
//
// # Safety
// As `qs_generate`.
QS_API
qs_status qs_generate_tokens(qs_context *ctx,
                             const qs_token *tokens,
                             size_t n_tokens,
                             const qs_generate_params *params,
                             qs_piece_cb cb,
                             void *userdata,
                             qs_generate_result *out_result);

// Default conversion options (see the field comments).
QS_API qs_convert_params qs_convert_default_params(void);

// Name of a `QS_QUANT_*` value ("q4", "q4_sym", "f32", "keep", ...): a static string;
// NULL for an unknown value.
QS_API const char *qs_quant_type_name(uint32_t quant_type);

// Convert `src` (a GGUF file or a HuggingFace model folder, NUL-terminated path) to the
// QSF file `dst`, as `qstream convert` does (presets, overrides, rotation, calibration and
// GPTQ per `params`; every field is checked before any work). With
// `params->calibration_path` the source is first converted to q8 in a temporary file and
// run over the text. `progress_cb` (may be NULL) is called after each tensor with the
// tensor name; returning false cancels (`QS_STATUS_CANCELLED`, no output file is left).
//
// # Safety
// Paths NUL-terminated; `params` valid.
QS_API
qs_status qs_convert(const char *src,
                     const char *dst,
                     const qs_convert_params *params,
                     qs_progress_cb progress_cb,
                     void *userdata);

// Default model options (see the field comments of `qs_model_params`).
QS_API qs_model_params qs_model_default_params(void);

// Load a QSF model from the NUL-terminated `path`. On success `*out_model` receives a
// handle to free with `qs_model_free`. Errors: NOT_FOUND, IO, BAD_MAGIC,
// UNSUPPORTED_VERSION, CORRUPT, CHECKSUM, UNSUPPORTED_ARCH/QUANT, OUT_OF_MEMORY,
// BUDGET_EXCEEDED, CANCELLED.
//
// # Safety
// `path` NUL-terminated; `params` a valid params struct; `out_model` writable.
QS_API
qs_status qs_model_load(const char *path,
                        const qs_model_params *params,
                        qs_model **out_model);

// Release a model handle. Contexts created from it stay valid (they hold their own
// reference; the weights are freed with the last one). NULL is a no-op.
//
// # Safety
// `model` NULL or a handle from `qs_model_load`, not used afterwards.
QS_API void qs_model_free(qs_model *model);

// Architecture name ("llama", "qwen2", ...): a static string, never freed. NULL when
// `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API const char *qs_model_arch(const qs_model *model);

// Vocabulary size (logits per position); 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_vocab(const qs_model *model);

// Training context length in tokens; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_ctx_train(const qs_model *model);

// Embedding width; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_embd(const qs_model *model);

// Number of layers; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_layer(const qs_model *model);

// Attention heads; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_head(const qs_model *model);

// Key/value heads; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_n_head_kv(const qs_model *model);

// Number of weight values over all tensors; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint64_t qs_model_n_params(const qs_model *model);

// Size of the model file in bytes; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint64_t qs_model_file_size(const qs_model *model);

// Tensor bits per weight value; 0 when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API double qs_model_bits_per_weight(const qs_model *model);

// The most common tensor storage type (a `QS_QUANT_*` value); `QS_QUANT_KEEP` when
// `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API uint32_t qs_model_quant_type(const qs_model *model);

// Beginning-of-sequence id, or `QS_TOKEN_NULL`.
//
// # Safety
// `model` NULL or live.
QS_API qs_token qs_model_bos(const qs_model *model);

// The first end-of-sequence id, or `QS_TOKEN_NULL`.
//
// # Safety
// `model` NULL or live.
QS_API qs_token qs_model_eos(const qs_model *model);

// Whether the model has a chat template; false when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API bool qs_model_has_chat_template(const qs_model *model);

// Whether `token` ends generation (EOS or end-of-turn); false when `model` is NULL.
//
// # Safety
// `model` NULL or live.
QS_API bool qs_model_is_eos(const qs_model *model, qs_token token);

// Text → token ids. `text` is UTF-8 of `text_len` bytes (NULL allowed when 0).
// `add_special` adds BOS (and what the tokenizer's post-processor adds). Writes up to
// `capacity` ids to `out_tokens` (NULL allowed when `capacity` is 0) and the count to
// `*out_len`; if they do not fit returns `QS_STATUS_BUFFER_TOO_SMALL` with the needed
// count in `*out_len`.
//
// # Safety
// Pointers valid for the given lengths.
QS_API
qs_status qs_tokenize(const qs_model *model,
                      const char *text,
                      size_t text_len,
                      bool add_special,
                      qs_token *out_tokens,
                      size_t capacity,
                      size_t *out_len);

// Token ids → UTF-8 text, NUL-terminated, special tokens included. On success
// `*out_len` = text bytes (without the NUL); `QS_STATUS_BUFFER_TOO_SMALL` puts the
// needed capacity (text + NUL) in `*out_len`.
//
// # Safety
// Pointers valid for the given lengths.
QS_API
qs_status qs_detokenize(const qs_model *model,
                        const qs_token *tokens,
                        size_t n_tokens,
                        char *out_text,
                        size_t capacity,
                        size_t *out_len);

// The display text of one token (as `qs_detokenize` of that single id), NUL-terminated,
// same buffer rules. A token holding part of a UTF-8 character yields U+FFFD; stream
// with `qs_generate` or detokenize whole sequences to avoid that.
//
// # Safety
// Pointers valid for the given lengths.
QS_API
qs_status qs_token_to_piece(const qs_model *model,
                            qs_token token,
                            char *out_text,
                            size_t capacity,
                            size_t *out_len);

// Render `messages` with the model's chat template into `out` (NUL-terminated; buffer
// rules as `qs_detokenize`). `add_generation_prompt` appends the assistant header.
// `QS_STATUS_INVALID_ARGUMENT` when the model has no template or the template fails.
//
// # Safety
// `messages` points to `n_messages` messages with valid strings.
QS_API
qs_status qs_chat_apply_template(const qs_model *model,
                                 const qs_chat_message *messages,
                                 size_t n_messages,
                                 bool add_generation_prompt,
                                 char *out,
                                 size_t capacity,
                                 size_t *out_len);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* QSTREAM_H */
