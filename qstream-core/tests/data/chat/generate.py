"""Expected renderings for tests/chat_template.rs, computed with transformers' own renderer.

    python3 generate.py   # writes cases.json (transformers 5.x, jinja2 >= 3.1.6)
"""
import json, pathlib
from transformers.utils.chat_template_utils import render_jinja_template

here = pathlib.Path(__file__).parent
two_turns = [
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "I am a tiny model. 🤖 Nice to meet you!"},
    {"role": "user", "content": "Tell me a joke about 世界."},
]
with_system = [{"role": "system", "content": "  You are terse.\n"}] + two_turns
skipped = two_turns + [{"role": "assistant", "content": "!ignored"}, {"role": "user", "content": "ok"}]
cases = []
for tpl in ["chatml.jinja", "smollm2.jinja", "hf_features.jinja"]:
    src = (here / tpl).read_text()
    for name, msgs in [("no_system", two_turns), ("system", with_system), ("skip", skipped)]:
        for agp in [True, False]:
            out = render_jinja_template(
                conversations=[msgs], chat_template=src, add_generation_prompt=agp,
                bos_token="<|im_start|>", eos_token="<|im_end|>")
            out = out[0] if isinstance(out, tuple) else out
            out = out[0] if isinstance(out, list) else out
            cases.append({"template": tpl, "name": name, "messages": msgs,
                          "add_generation_prompt": agp, "bos_token": "<|im_start|>",
                          "eos_token": "<|im_end|>", "expected": out})
(here / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
print(len(cases), "cases")
