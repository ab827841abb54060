// wrapper.cpp — the C++ wrapper of examples-c (qstream.hpp): an exception thrown by a
// streaming callback reaches the caller of generate() instead of unwinding through the
// library (which would abort the process), and the context stays usable.
//   qs_test_wrapper MODEL.qsf      prints "wrapper: all checks passed"
#include "qstream.hpp"

#include <cstdio>
#include <string>

struct stop_here : std::runtime_error {
    stop_here() : std::runtime_error("thrown by the piece callback") {}
};

static int failures = 0;
#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                   \
        }                                                                 \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.qsf\n", argv[0]);
        return 2;
    }
    qs::model model(argv[1]);
    qs::context ctx(model);
    qs_sampling_params sp = qs_sampling_default_params();
    sp.temperature = 0.0f;
    qs_generate_params gp = qs_generate_default_params();
    gp.max_tokens = 16;
    gp.stop_on_eos = false;
    gp.sampling = &sp;

    int calls = 0;
    bool caught = false;
    try {
        ctx.generate("Hello world", gp, [&](const std::string &) {
            if (++calls == 3) throw stop_here();
        });
    } catch (const stop_here &) {
        caught = true;
    }
    CHECK(caught);
    CHECK(calls == 3);  // generation stopped at the throwing piece

    // the context is usable afterwards
    ctx.reset();
    int pieces = 0;
    qs_generate_result r = ctx.generate("Hello world", gp, [&](const std::string &) { ++pieces; });
    CHECK(r.n_generated == 16);
    CHECK(pieces == 16);

    if (failures) {
        std::fprintf(stderr, "wrapper: %d checks failed\n", failures);
        return 1;
    }
    std::printf("wrapper: all checks passed\n");
    return 0;
}
