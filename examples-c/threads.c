/* threads.c — several contexts on several threads over one shared model.
 *
 *   threads MODEL.qsf N_THREADS PROMPT_IDS [EXPECTED_IDS]
 *
 * PROMPT_IDS / EXPECTED_IDS are comma-separated token ids. Each thread creates its own
 * context and generates greedily; every thread must produce the tokens of a
 * single-context run (and EXPECTED_IDS when given). The model handle is freed while the
 * threads still run their contexts (contexts keep the model alive). */
#include <qstream.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDS 1024
#define MAX_THREADS 64

typedef struct {
    qs_context *ctx;
    const qs_token *prompt;
    size_t n_prompt;
    unsigned n_gen;
    qs_token out[MAX_IDS];
    size_t n_out;
    qs_status status;
} job;

static size_t parse_ids(const char *s, qs_token *out) {
    size_t n = 0;
    char *end;
    while (*s && n < MAX_IDS) {
        unsigned long v = strtoul(s, &end, 10);
        if (end == s) break;
        out[n++] = (qs_token)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

static bool collect(void *userdata, const char *piece, size_t len, qs_token token) {
    job *j = (job *)userdata;
    (void)piece;
    (void)len;
    if (j->n_out < MAX_IDS) j->out[j->n_out++] = token;
    return true;
}

static void *run(void *arg) {
    job *j = (job *)arg;
    qs_sampling_params sp = qs_sampling_default_params();
    sp.temperature = 0.0f;
    qs_generate_params gp = qs_generate_default_params();
    gp.max_tokens = j->n_gen;
    gp.stop_on_eos = false;
    gp.sampling = &sp;
    j->status = qs_generate_tokens(j->ctx, j->prompt, j->n_prompt, &gp, collect, j, NULL);
    if (j->status != QS_STATUS_OK)
        fprintf(stderr, "generate: %s (%s)\n", qs_status_str(j->status), qs_last_error_message());
    return NULL;
}

static int same(const job *a, const qs_token *ids, size_t n) {
    return a->n_out == n && memcmp(a->out, ids, n * sizeof *ids) == 0;
}

static void print_ids(const char *label, const qs_token *ids, size_t n) {
    printf("%s:", label);
    for (size_t i = 0; i < n; i++) printf(" %u", ids[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    static qs_token prompt[MAX_IDS], expected[MAX_IDS];
    static job jobs[MAX_THREADS + 1];
    pthread_t th[MAX_THREADS];
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.qsf N_THREADS PROMPT_IDS [EXPECTED_IDS]\n", argv[0]);
        return 2;
    }
    int n_threads = atoi(argv[2]);
    if (n_threads < 1 || n_threads > MAX_THREADS) n_threads = 4;
    size_t n_prompt = parse_ids(argv[3], prompt);
    size_t n_expected = argc > 4 ? parse_ids(argv[4], expected) : 0;
    unsigned n_gen = n_expected ? (unsigned)n_expected : 16;

    qs_model *model = NULL;
    qs_model_params mp = qs_model_default_params();
    mp.n_threads = 1; /* each context computes on one thread; parallelism comes from the jobs */
    qs_status st = qs_model_load(argv[1], &mp, &model);
    if (st != QS_STATUS_OK) {
        fprintf(stderr, "load: %s (%s)\n", qs_status_str(st), qs_last_error_message());
        return 1;
    }
    qs_context_params cp = qs_context_default_params();
    for (int i = 0; i <= n_threads; i++) {
        jobs[i].prompt = prompt;
        jobs[i].n_prompt = n_prompt;
        jobs[i].n_gen = n_gen;
        st = qs_context_new(model, &cp, &jobs[i].ctx);
        if (st != QS_STATUS_OK) {
            fprintf(stderr, "context: %s (%s)\n", qs_status_str(st), qs_last_error_message());
            return 1;
        }
    }
    /* reference: one context, this thread */
    run(&jobs[n_threads]);
    /* the contexts hold the model: drop our handle before the threads start */
    qs_model_free(model);
    for (int i = 0; i < n_threads; i++) pthread_create(&th[i], NULL, run, &jobs[i]);
    for (int i = 0; i < n_threads; i++) pthread_join(th[i], NULL);

    int rc = 0;
    const job *ref = &jobs[n_threads];
    print_ids("single", ref->out, ref->n_out);
    if (ref->status != QS_STATUS_OK || ref->n_out != n_gen) rc = 1;
    if (n_expected && !same(ref, expected, n_expected)) {
        print_ids("expected", expected, n_expected);
        fprintf(stderr, "single-context tokens differ from the expected ids\n");
        rc = 1;
    }
    for (int i = 0; i < n_threads; i++) {
        if (jobs[i].status != QS_STATUS_OK || !same(&jobs[i], ref->out, ref->n_out)) {
            print_ids("thread", jobs[i].out, jobs[i].n_out);
            fprintf(stderr, "thread %d differs from the single-context run\n", i);
            rc = 1;
        }
    }
    for (int i = 0; i <= n_threads; i++) qs_context_free(jobs[i].ctx);
    printf(rc == 0 ? "%d threads: identical greedy tokens\n" : "%d threads: MISMATCH\n", n_threads);
    return rc;
}
