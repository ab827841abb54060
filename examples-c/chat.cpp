// chat.cpp — interactive chat with streaming, over the small RAII C++ wrapper qstream.hpp.
//
//   chat MODEL.qsf [--max-tokens N] [--system "prompt"] [--greedy]
//
// Reads one user message per line from stdin until EOF (works interactively and with
// piped input), streams each reply, prints "chat: N turns" at the end.
#include "qstream.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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
