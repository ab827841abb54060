/* tokenize.c — text → token ids → text, with the two-call buffer sizing convention.
 *
 *   tokenize MODEL.qsf "text"
 *
 * Exits non-zero if detokenize(tokenize(text)) differs from text. */
#include <qstream.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, qs_status st) {
    fprintf(stderr, "%s: %s (%s)\n", what, qs_status_str(st), qs_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.qsf \"text\"\n", argv[0]);
        return 2;
    }
    const char *text = argv[2];
    size_t text_len = strlen(text);
    qs_model *model = NULL;
    qs_model_params mp = qs_model_default_params();
    qs_status st = qs_model_load(argv[1], &mp, &model);
    if (st != QS_STATUS_OK) return fail("qs_model_load", st);

    int rc = 1;
    qs_token *ids = NULL;
    char *back = NULL;
    size_t n = 0, len = 0;

    /* 1st call: learn the size */
    st = qs_tokenize(model, text, text_len, false, NULL, 0, &n);
    if (st != QS_STATUS_BUFFER_TOO_SMALL && st != QS_STATUS_OK) { fail("qs_tokenize (size)", st); goto out; }
    ids = (qs_token *)malloc((n ? n : 1) * sizeof *ids);
    if (!ids) goto out;
    st = qs_tokenize(model, text, text_len, false, ids, n, &n);
    if (st != QS_STATUS_OK) { fail("qs_tokenize", st); goto out; }

    printf("%zu tokens:", n);
    for (size_t i = 0; i < n; i++) printf(" %u", ids[i]);
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        char piece[256];
        size_t plen = 0;
        st = qs_token_to_piece(model, ids[i], piece, sizeof piece, &plen);
        if (st != QS_STATUS_OK) { fail("qs_token_to_piece", st); goto out; }
        printf("  %6u  '%s'\n", ids[i], piece);
    }

    st = qs_detokenize(model, ids, n, NULL, 0, &len);
    if (st != QS_STATUS_BUFFER_TOO_SMALL) { fail("qs_detokenize (size)", st); goto out; }
    back = (char *)malloc(len);
    if (!back) goto out;
    st = qs_detokenize(model, ids, n, back, len, &len);
    if (st != QS_STATUS_OK) { fail("qs_detokenize", st); goto out; }
    printf("detokenized: '%s'\n", back);
    if (len != text_len || memcmp(back, text, len) != 0) {
        fprintf(stderr, "round trip mismatch\n");
        goto out;
    }
    printf("round trip OK\n");
    rc = 0;
out:
    free(back);
    free(ids);
    qs_model_free(model);
    return rc;
}
