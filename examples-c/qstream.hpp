// qstream.hpp — a small RAII C++ wrapper of qstream.h used by the C++ examples (chat.cpp)
// and tests (qstream-capi/tests/c/wrapper.cpp): handles as unique_ptr, statuses as
// exceptions, callbacks as lambdas that may throw.
#ifndef QSTREAM_EXAMPLES_HPP
#define QSTREAM_EXAMPLES_HPP

#include <qstream.h>

#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace qs {

// Error carrying the status and the library's message.
struct error : std::runtime_error {
    qs_status status;
    error(const char *what, qs_status st)
        : std::runtime_error(std::string(what) + ": " + qs_status_str(st) + " (" + qs_last_error_message() + ")"),
          status(st) {}
};

inline void check(qs_status st, const char *what) {
    if (st != QS_STATUS_OK) throw error(what, st);
}

struct model_deleter { void operator()(qs_model *m) const { qs_model_free(m); } };
struct context_deleter { void operator()(qs_context *c) const { qs_context_free(c); } };

class model {
  public:
    explicit model(const std::string &path, qs_model_params p = qs_model_default_params()) {
        qs_model *m = nullptr;
        check(qs_model_load(path.c_str(), &p, &m), "qs_model_load");
        handle_.reset(m);
    }
    const qs_model *get() const { return handle_.get(); }
    std::string arch() const { return qs_model_arch(get()); }

    // Render a conversation with the model's chat template (two-call sizing).
    std::string apply_template(const std::vector<std::pair<std::string, std::string>> &msgs,
                               bool add_generation_prompt) const {
        std::vector<qs_chat_message> c;
        for (const auto &m : msgs) c.push_back(qs_chat_message{m.first.c_str(), m.second.c_str()});
        size_t need = 0;
        qs_status st = qs_chat_apply_template(get(), c.data(), c.size(), add_generation_prompt, nullptr, 0, &need);
        if (st != QS_STATUS_BUFFER_TOO_SMALL) check(st, "qs_chat_apply_template");
        std::string out(need, '\0');
        size_t len = 0;
        check(qs_chat_apply_template(get(), c.data(), c.size(), add_generation_prompt, &out[0], out.size(), &len),
              "qs_chat_apply_template");
        out.resize(len);
        return out;
    }

  private:
    std::unique_ptr<qs_model, model_deleter> handle_;
};

class context {
  public:
    explicit context(const model &m, qs_context_params p = qs_context_default_params()) {
        qs_context *c = nullptr;
        check(qs_context_new(m.get(), &p, &c), "qs_context_new");
        handle_.reset(c);
    }
    qs_context *get() const { return handle_.get(); }
    void reset() { check(qs_context_reset(get()), "qs_context_reset"); }

    // Generate from a text prompt, calling on_piece(text) for each streamed piece.
    // An exception thrown by on_piece never unwinds through the library (which is not
    // exception-safe and aborts): the trampoline catches it, stops generation and it is
    // rethrown here once qs_generate has returned.
    template <class F>
    qs_generate_result generate(const std::string &prompt, const qs_generate_params &gp, F on_piece) {
        qs_generate_result r;
        std::memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        struct state {
            F *f;
            std::exception_ptr err;
        } st{&on_piece, nullptr};
        auto tramp = [](void *ud, const char *piece, size_t len, qs_token) -> bool {
            state *s = static_cast<state *>(ud);
            try {
                (*s->f)(std::string(piece, len));
                return true;
            } catch (...) {
                s->err = std::current_exception();
                return false;
            }
        };
        qs_status rc = qs_generate(get(), prompt.data(), prompt.size(), &gp, tramp, &st, &r);
        if (st.err) std::rethrow_exception(st.err);
        check(rc, "qs_generate");
        return r;
    }

  private:
    std::unique_ptr<qs_context, context_deleter> handle_;
};

}  // namespace qs

#endif  // QSTREAM_EXAMPLES_HPP
