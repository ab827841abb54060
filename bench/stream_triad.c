/*
 * STREAM triad: a[i] = b[i] + s * c[i] over three arrays much larger than the caches.
 * Prints the best (highest) bandwidth over N repetitions in GB/s (1 GB = 1e9 bytes),
 * counting 3 × 8 bytes per element (2 reads + 1 write; write-allocate traffic not counted,
 * as in McCalpin's STREAM).
 *
 * usage: stream_triad [MB_PER_ARRAY=512] [REPS=10] [THREADS=all online cpus]
 * Build: cc -O3 -march=native -pthread stream_triad.c -o stream_triad
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double *A, *B, *C;
static size_t N;
static int NT;
static pthread_barrier_t bar_start, bar_end;
static volatile int stop_flag = 0;
static const double SCALAR = 3.0;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void range(int id, size_t *lo, size_t *hi) {
    size_t chunk = (N + NT - 1) / NT;
    *lo = (size_t)id * chunk;
    *hi = *lo + chunk > N ? N : *lo + chunk;
    if (*lo > N) *lo = N;
}

/* each worker first-touches its own slice, then runs the triad on it once per repetition */
static void *worker(void *arg) {
    int id = (int)(size_t)arg;
    size_t lo, hi;
    range(id, &lo, &hi);
    for (size_t i = lo; i < hi; i++) { A[i] = 1.0; B[i] = 2.0; C[i] = 0.5; }
    for (;;) {
        pthread_barrier_wait(&bar_start);
        if (stop_flag) break;
        double *restrict a = A, *restrict b = B, *restrict c = C;
        for (size_t i = lo; i < hi; i++) a[i] = b[i] + SCALAR * c[i];
        pthread_barrier_wait(&bar_end);
    }
    return NULL;
}

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 512;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    NT = argc > 3 ? atoi(argv[3]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (mb == 0 || reps <= 0 || NT <= 0) {
        fprintf(stderr, "usage: %s [MB_PER_ARRAY>0] [REPS>0] [THREADS>0]\n", argv[0]);
        return 2;
    }
    N = mb * 1000000 / sizeof(double);
    size_t bytes = N * sizeof(double);
    if (posix_memalign((void **)&A, 64, bytes) || posix_memalign((void **)&B, 64, bytes) ||
        posix_memalign((void **)&C, 64, bytes)) {
        fprintf(stderr, "out of memory (3 x %zu MB)\n", mb);
        return 1;
    }
    pthread_barrier_init(&bar_start, NULL, NT + 1);
    pthread_barrier_init(&bar_end, NULL, NT + 1);
    pthread_t *th = calloc(NT, sizeof(pthread_t));
    for (int t = 0; t < NT; t++) pthread_create(&th[t], NULL, worker, (void *)(size_t)t);
    double best = 1e30, sum = 0;
    for (int r = 0; r < reps + 1; r++) { /* repetition 0 is a warm-up */
        double t0 = now();
        pthread_barrier_wait(&bar_start);
        pthread_barrier_wait(&bar_end);
        double dt = now() - t0;
        if (r == 0) continue;
        if (dt < best) best = dt;
        sum += dt;
    }
    stop_flag = 1;
    pthread_barrier_wait(&bar_start);
    for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
    /* check the result so the compiler cannot drop the loop */
    double expect = 2.0 + SCALAR * 0.5;
    for (size_t i = 0; i < N; i += 4096)
        if (A[i] != expect) { fprintf(stderr, "triad check failed at %zu: %g\n", i, A[i]); return 1; }
    double moved = 3.0 * (double)bytes;
    printf("triad threads=%d arrays=3x%zuMB reps=%d best=%.2f GB/s mean=%.2f GB/s\n", NT, mb, reps,
           moved / best / 1e9, moved / (sum / reps) / 1e9);
    return 0;
}
