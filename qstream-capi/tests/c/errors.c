/* errors.c — error codes through the C ABI: missing file, truncated and foreign files,
 * NULL arguments, buffer sizing, context full, version strings.
 *
 *   errors MODEL.qsf WORKDIR */
#include <qstream.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define EXPECT(cond)                                                                          \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: expected %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
                    qs_last_error_message());                                                 \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

static int write_prefix(const char *src, const char *dst, long n) {
    FILE *f = fopen(src, "rb");
    if (!f) return -1;
    char *buf = (char *)malloc((size_t)n);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    FILE *g = fopen(dst, "wb");
    if (!g) { free(buf); return -1; }
    fwrite(buf, 1, got, g);
    fclose(g);
    free(buf);
    return 0;
}

static long file_size(const char *p) {
    FILE *f = fopen(p, "rb");
    long n;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    char path[4096];
    qs_model *m = NULL;
    qs_context *c = NULL;
    qs_model_params mp = qs_model_default_params();
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.qsf WORKDIR\n", argv[0]);
        return 2;
    }
    EXPECT(strcmp(qs_version(), QS_VERSION_STRING) == 0);
    EXPECT(qs_abi_version() == QS_ABI_VERSION);
    EXPECT(strcmp(qs_status_str(QS_STATUS_NOT_FOUND), "QS_STATUS_NOT_FOUND") == 0);
    EXPECT(strcmp(qs_status_str(-7), "QS_STATUS_UNKNOWN") == 0);

    /* missing file */
    snprintf(path, sizeof path, "%s/no-such-model.qsf", argv[2]);
    EXPECT(qs_model_load(path, &mp, &m) == QS_STATUS_NOT_FOUND);
    EXPECT(m == NULL);
    EXPECT(strstr(qs_last_error_message(), "no-such-model.qsf") != NULL);
    qs_clear_last_error();
    EXPECT(qs_last_error_message()[0] == '\0');

    /* truncated copies → a 2xx file/format code */
    long size = file_size(argv[1]);
    EXPECT(size > 1000);
    long cuts[3];
    cuts[0] = 64;
    cuts[1] = size / 2;
    cuts[2] = size - 1;
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/truncated-%d.qsf", argv[2], i);
        EXPECT(write_prefix(argv[1], path, cuts[i]) == 0);
        qs_status st = qs_model_load(path, &mp, &m);
        EXPECT(st >= 200 && st < 300);
        EXPECT(m == NULL);
    }
    /* not a model */
    snprintf(path, sizeof path, "%s/foreign.qsf", argv[2]);
    {
        FILE *f = fopen(path, "wb");
        for (int i = 0; i < 4096; i++) fputc('Z', f);
        fclose(f);
    }
    EXPECT(qs_model_load(path, &mp, &m) == QS_STATUS_BAD_MAGIC);

    /* NULL arguments */
    EXPECT(qs_model_load(NULL, &mp, &m) == QS_STATUS_NULL_ARGUMENT);
    EXPECT(qs_model_load(argv[1], NULL, &m) == QS_STATUS_NULL_ARGUMENT);
    EXPECT(qs_model_load(argv[1], &mp, NULL) == QS_STATUS_NULL_ARGUMENT);

    /* the real model */
    EXPECT(qs_model_load(argv[1], &mp, &m) == QS_STATUS_OK);
    if (!m) return 1;
    qs_context_params cp = qs_context_default_params();
    cp.n_ctx = 8;
    EXPECT(qs_context_new(NULL, &cp, &c) == QS_STATUS_NULL_ARGUMENT);
    EXPECT(qs_context_new(m, &cp, &c) == QS_STATUS_OK);
    size_t n = 0;
    EXPECT(qs_tokenize(m, "hello", 5, false, NULL, 0, &n) == QS_STATUS_BUFFER_TOO_SMALL && n > 0);
    EXPECT(qs_tokenize(m, NULL, 5, false, NULL, 0, &n) == QS_STATUS_NULL_ARGUMENT);
    qs_token many[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT(qs_context_decode(c, many, 9) == QS_STATUS_CONTEXT_FULL);
    EXPECT(qs_context_n_past(c) == 0);
    EXPECT(qs_context_decode(c, many, 8) == QS_STATUS_OK);
    EXPECT(qs_context_n_past(c) == 8);
    const float *logits = NULL;
    size_t n_vocab = 0;
    EXPECT(qs_context_logits(c, &logits, &n_vocab) == QS_STATUS_OK && logits && n_vocab == qs_model_n_vocab(m));
    EXPECT(qs_context_cancel(c) == QS_STATUS_OK);
    EXPECT(qs_context_reset(c) == QS_STATUS_OK);
    EXPECT(qs_context_n_past(c) == 0);
    many[0] = qs_model_n_vocab(m);
    EXPECT(qs_context_decode(c, many, 1) == QS_STATUS_INVALID_ARGUMENT);
    EXPECT(qs_context_n_past(c) == 0);
    qs_convert_params vp = qs_convert_default_params();
    vp.quant_type = 1; /* not a QS_QUANT_* value */
    snprintf(path, sizeof path, "%s/never.qsf", argv[2]);
    EXPECT(qs_convert(argv[1], path, &vp, NULL, NULL) == QS_STATUS_INVALID_ARGUMENT);
    qs_context_free(c);
    qs_model_free(m);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("errors: all checks passed\n");
    return 0;
}
