/* simple.c — load a QSF model, generate a completion with streaming, print tokens/s.
 *
 *   simple MODEL.qsf ["prompt"] [n_predict]
 *
 * Every call's status is checked; on failure the library's message is printed. */
#include <qstream.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                   \
    do {                                                                              \
        qs_status st_ = (call);                                                       \
        if (st_ != QS_STATUS_OK) {                                                    \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, qs_status_str(st_),        \
                    qs_last_error_message());                                         \
            goto fail;                                                                \
        }                                                                             \
    } while (0)

static bool on_piece(void *userdata, const char *piece, size_t len, qs_token token) {
    size_t *count = (size_t *)userdata;
    (void)token;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    ++*count;
    return true;
}

int main(int argc, char **argv) {
    qs_model *model = NULL;
    qs_context *ctx = NULL;
    int rc = 1;
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.qsf [prompt] [n_predict]\n", argv[0]);
        return 2;
    }
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    unsigned n_predict = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 32;

    if (qs_abi_version() != QS_ABI_VERSION) {
        fprintf(stderr, "libqstream ABI %u does not match the header's %u\n", qs_abi_version(),
                (unsigned)QS_ABI_VERSION);
        return 1;
    }
    printf("qstream %s\n", qs_version());

    qs_model_params mp = qs_model_default_params();
    CHECK(qs_model_load(argv[1], &mp, &model));
    printf("model: %s, %u layers, %llu params, %.2f bits/weight\n", qs_model_arch(model),
           qs_model_n_layer(model), (unsigned long long)qs_model_n_params(model),
           qs_model_bits_per_weight(model));

    qs_context_params cp = qs_context_default_params();
    CHECK(qs_context_new(model, &cp, &ctx));

    qs_sampling_params sp = qs_sampling_default_params();
    sp.temperature = 0.0f; /* greedy: reproducible */
    qs_generate_params gp = qs_generate_default_params();
    gp.max_tokens = n_predict;
    gp.sampling = &sp;

    qs_generate_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    size_t streamed = 0;
    printf("%s", prompt);
    CHECK(qs_generate(ctx, prompt, strlen(prompt), &gp, on_piece, &streamed, &res));
    printf("\n");

    if (res.n_generated == 0 || streamed != res.n_generated) {
        fprintf(stderr, "expected the callback once per generated token (%zu vs %u)\n", streamed,
                res.n_generated);
        goto fail;
    }
    printf("prompt: %u tokens in %.3f s; generated %u tokens in %.3f s (%.1f tok/s), stop reason %u\n",
           res.n_prompt, res.prompt_secs, res.n_generated, res.gen_secs,
           res.gen_secs > 0 ? res.n_generated / res.gen_secs : 0.0, res.stop_reason);
    rc = 0;
fail:
    qs_context_free(ctx);
    qs_model_free(model);
    return rc;
}
