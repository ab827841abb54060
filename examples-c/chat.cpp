// chat.cpp — interactive chat with streaming, over a small RAII C++ wrapper of qstream.h.
//
//   chat MODEL.qsf [--max-tokens N] [--system "prompt"] [--greedy]
//
// Reads one user message per line from stdin until EOF (works interactively and with
// piped input), streams each reply, prints "chat: N turns" at the end.
#include <qstream.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
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
    template <class F>
    qs_generate_result generate(const std::string &prompt, const qs_generate_params &gp, F on_piece) {
        qs_generate_result r;
        std::memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        auto tramp = [](void *ud, const char *piece, size_t len, qs_token) -> bool {
            (*static_cast<F *>(ud))(std::string(piece, len));
            return true;
        };
        check(qs_generate(get(), prompt.data(), prompt.size(), &gp, tramp, &on_piece, &r), "qs_generate");
        return r;
    }

  private:
    std::unique_ptr<qs_context, context_deleter> handle_;
};

}  // namespace qs

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.qsf [--max-tokens N] [--system TEXT] [--greedy]\n", argv[0]);
        return 2;
    }
    unsigned max_tokens = 128;
    bool greedy = false;
    std::string system;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--max-tokens" && i + 1 < argc) max_tokens = (unsigned)std::strtoul(argv[++i], nullptr, 10);
        else if (a == "--system" && i + 1 < argc) system = argv[++i];
        else if (a == "--greedy") greedy = true;
    }
    try {
        qs::model model(argv[1]);
        if (!qs_model_has_chat_template(model.get())) throw std::runtime_error("the model has no chat template");
        qs::context ctx(model);
        qs_sampling_params sp = qs_sampling_default_params();
        if (greedy) sp.temperature = 0.0f;
        qs_generate_params gp = qs_generate_default_params();
        gp.max_tokens = max_tokens;
        gp.sampling = &sp;

        std::vector<std::pair<std::string, std::string>> history;
        if (!system.empty()) history.emplace_back("system", system);
        std::fprintf(stderr, "chat with %s (%s); one message per line, EOF (Ctrl-D) ends\n", argv[1],
                     model.arch().c_str());
        std::string line;
        int turns = 0;
        while (std::cout << "user> " << std::flush, std::getline(std::cin, line)) {
            if (line.empty()) continue;
            history.emplace_back("user", line);
            // re-render the whole conversation each turn (simple and always consistent)
            std::string prompt = model.apply_template(history, true);
            ctx.reset();
            std::string reply;
            std::cout << "assistant> " << std::flush;
            qs_generate_result r = ctx.generate(prompt, gp, [&](const std::string &piece) {
                reply += piece;
                std::cout << piece << std::flush;
            });
            std::cout << "\n[" << r.n_generated << " tokens, "
                      << (r.gen_secs > 0 ? r.n_generated / r.gen_secs : 0.0) << " tok/s]\n";
            history.emplace_back("assistant", reply);
            ++turns;
        }
        std::cout << "\nchat: " << turns << " turns\n";
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
