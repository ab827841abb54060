/*
 * attention.c: drive qs_attn_cache (QStream's standalone KV cache + attention) from a
 * hand-written decoder loop, the way a llama.cpp-style host would, and check every
 * output against a plain f32 softmax attention computed here.
 *
 *   qs_attention [k_type v_type]     types: f32 f16 bf16 q8 q4 q3 q2 qins8 q8h q4h q3h q2h
 *
 * A toy one-layer "model": fixed pseudo-random projections turn each token's hidden
 * vector into q (n_q_heads x head_dim) and k, v (n_kv_heads x head_dim). A 24-token prompt
 * is appended and attended in one batch (causal), then 40 tokens are decoded one at a
 * time. f32 K/V must match the reference to 1e-5; quantized types must keep the cosine
 * similarity of every output row above a per-type bound.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qstream.h"

#define HEAD_DIM 64
#define N_KV 2
#define N_Q 6
#define N_EMBD 96
#define N_PROMPT 24
#define N_GEN 40
#define CAP (N_PROMPT + N_GEN)

static unsigned long long rng = 0x1234567890abcdefULL;
static float frand(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

static int type_of(const char *s) {
    static const char *names[] = {"f32", "f16", "bf16", "q8",  "q4",  "q3",
                                  "q2",  "qins8", "q8h", "q4h", "q3h", "q2h"};
    for (int i = 0; i < 12; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

/* y[r] = sum_c w[r*cols + c] x[c] */
static void matvec(const float *w, const float *x, int rows, int cols, float *y) {
    for (int r = 0; r < rows; r++) {
        float acc = 0;
        for (int c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
        y[r] = acc;
    }
}

/* reference: query at position pos over keys/values 0..pos (f32 history) */
static void ref_attend(const float *q, const float *ks, const float *vs, int pos, float *out) {
    float s[CAP];
    const float scale = 1.0f / sqrtf((float)HEAD_DIM);
    for (int h = 0; h < N_Q; h++) {
        int kvh = h / (N_Q / N_KV);
        float mx = -INFINITY, sum = 0;
        for (int t = 0; t <= pos; t++) {
            const float *k = ks + ((size_t)t * N_KV + kvh) * HEAD_DIM;
            float d = 0;
            for (int i = 0; i < HEAD_DIM; i++) d += q[h * HEAD_DIM + i] * k[i];
            s[t] = d * scale;
            if (s[t] > mx) mx = s[t];
        }
        for (int t = 0; t <= pos; t++) { s[t] = expf(s[t] - mx); sum += s[t]; }
        for (int i = 0; i < HEAD_DIM; i++) {
            float acc = 0;
            for (int t = 0; t <= pos; t++) acc += s[t] * vs[((size_t)t * N_KV + kvh) * HEAD_DIM + i];
            out[h * HEAD_DIM + i] = acc / sum;
        }
    }
}

static int check(const char *kt, const char *vt, int exact) {
    qs_attn_cache_params p = qs_attn_cache_default_params();
    p.head_dim = HEAD_DIM;
    p.n_kv_heads = N_KV;
    p.n_q_heads = N_Q;
    p.capacity = CAP;
    p.type_k = (uint32_t)type_of(kt);
    p.type_v = (uint32_t)type_of(vt);
    qs_attn_cache *c = NULL;
    if (qs_attn_cache_new(&p, &c) != QS_STATUS_OK) {
        fprintf(stderr, "qs_attn_cache_new: %s\n", qs_last_error_message());
        return 1;
    }
    /* weights of the toy layer and the host's own f32 history of k and v */
    float *wq = malloc(sizeof(float) * N_Q * HEAD_DIM * N_EMBD);
    float *wk = malloc(sizeof(float) * N_KV * HEAD_DIM * N_EMBD);
    float *wv = malloc(sizeof(float) * N_KV * HEAD_DIM * N_EMBD);
    float *ks = malloc(sizeof(float) * CAP * N_KV * HEAD_DIM);
    float *vs = malloc(sizeof(float) * CAP * N_KV * HEAD_DIM);
    float *qs = malloc(sizeof(float) * CAP * N_Q * HEAD_DIM);
    float *out = malloc(sizeof(float) * CAP * N_Q * HEAD_DIM);
    float ref[N_Q * HEAD_DIM], x[N_EMBD];
    for (int i = 0; i < N_Q * HEAD_DIM * N_EMBD; i++) wq[i] = frand() * 0.2f;
    for (int i = 0; i < N_KV * HEAD_DIM * N_EMBD; i++) { wk[i] = frand() * 0.3f; wv[i] = frand(); }
    for (int t = 0; t < CAP; t++) {
        for (int i = 0; i < N_EMBD; i++) x[i] = frand();
        matvec(wq, x, N_Q * HEAD_DIM, N_EMBD, qs + (size_t)t * N_Q * HEAD_DIM);
        matvec(wk, x, N_KV * HEAD_DIM, N_EMBD, ks + (size_t)t * N_KV * HEAD_DIM);
        matvec(wv, x, N_KV * HEAD_DIM, N_EMBD, vs + (size_t)t * N_KV * HEAD_DIM);
    }
    int fails = 0;
    double max_err = 0, min_cos = 1;
    /* prefill: the whole prompt in one append + one causal attend */
    if (qs_attn_cache_append(c, ks, vs, N_PROMPT) != QS_STATUS_OK ||
        qs_attn_cache_attend(c, qs, N_PROMPT, true, 0.0f, out) != QS_STATUS_OK) {
        fprintf(stderr, "prefill: %s\n", qs_last_error_message());
        fails++;
    }
    for (int t = 0; t < CAP && !fails; t++) {
        if (t >= N_PROMPT) { /* decode: one token at a time */
            const size_t kvo = (size_t)t * N_KV * HEAD_DIM, qo = (size_t)t * N_Q * HEAD_DIM;
            if (qs_attn_cache_append(c, ks + kvo, vs + kvo, 1) != QS_STATUS_OK ||
                qs_attn_cache_attend(c, qs + qo, 1, true, 0.0f, out + qo) != QS_STATUS_OK) {
                fprintf(stderr, "decode %d: %s\n", t, qs_last_error_message());
                fails++;
                break;
            }
        }
        ref_attend(qs + (size_t)t * N_Q * HEAD_DIM, ks, vs, t, ref);
        for (int h = 0; h < N_Q; h++) {
            const float *o = out + ((size_t)t * N_Q + h) * HEAD_DIM, *r = ref + h * HEAD_DIM;
            double dot = 0, no = 0, nr = 0;
            for (int i = 0; i < HEAD_DIM; i++) {
                double e = fabs((double)o[i] - r[i]);
                if (e > max_err) max_err = e;
                dot += (double)o[i] * r[i]; no += (double)o[i] * o[i]; nr += (double)r[i] * r[i];
            }
            double cs = dot / (sqrt(no * nr) + 1e-30);
            if (cs < min_cos) min_cos = cs;
        }
    }
    size_t len = qs_attn_cache_len(c), bytes = qs_attn_cache_memory_bytes(c);
    /* the cache is full: one more token is refused and nothing changes */
    if (qs_attn_cache_append(c, ks, vs, 1) != QS_STATUS_INVALID_ARGUMENT || qs_attn_cache_len(c) != CAP) fails++;
    /* rewind to the prompt, then attending more queries than positions is refused */
    if (qs_attn_cache_truncate(c, N_PROMPT) != QS_STATUS_OK || qs_attn_cache_len(c) != N_PROMPT) fails++;
    if (qs_attn_cache_attend(c, qs, N_PROMPT + 1, true, 0.0f, out) != QS_STATUS_INVALID_ARGUMENT) fails++;
    /* per-row cosine bounds by the lower precision of the pair (measured, with margin) */
    double bound = exact ? 0 : (strncmp(kt, "q2", 2) == 0 || strncmp(vt, "q2", 2) == 0) ? 0.80
                 : (strncmp(kt, "q3", 2) == 0 || strncmp(vt, "q3", 2) == 0) ? 0.90
                 : (strncmp(kt, "q4", 2) == 0 || strncmp(vt, "q4", 2) == 0) ? 0.98 : 0.999;
    if (exact ? max_err > 1e-5 : min_cos < bound) fails++;
    printf("attention k=%s v=%s: %zu positions, %zu bytes, max |err| %.2e, min cosine %.6f%s\n",
           kt, vt, len, bytes, max_err, min_cos, fails ? "  FAILED" : "");
    qs_attn_cache_free(c);
    free(wq); free(wk); free(wv); free(ks); free(vs); free(qs); free(out);
    return fails;
}

int main(int argc, char **argv) {
    int fails = 0;
    if (argc == 3) {
        if (type_of(argv[1]) < 0 || type_of(argv[2]) < 0) {
            fprintf(stderr, "usage: %s [k_type v_type]\n", argv[0]);
            return 2;
        }
        fails += check(argv[1], argv[2], strcmp(argv[1], "f32") == 0 && strcmp(argv[2], "f32") == 0);
    } else {
        fails += check("f32", "f32", 1);
        fails += check("q8", "q8", 0);
        fails += check("q4h", "q4", 0);
        fails += check("q4", "qins8", 0);
        fails += check("q3h", "q3", 0);
        fails += check("f16", "bf16", 0);
    }
    /* a bad shape is an error with a message, not a crash */
    qs_attn_cache_params p = qs_attn_cache_default_params();
    p.head_dim = 48; p.n_kv_heads = 1; p.n_q_heads = 1; p.capacity = 8; p.type_k = 4; /* q4 */
    qs_attn_cache *c = NULL;
    if (qs_attn_cache_new(&p, &c) != QS_STATUS_INVALID_ARGUMENT || c != NULL) fails++;
    else printf("refused head_dim 48 for q4: %s\n", qs_last_error_message());
    if (fails) {
        printf("attention: %d checks FAILED\n", fails);
        return 1;
    }
    printf("attention: all checks passed\n");
    return 0;
}
