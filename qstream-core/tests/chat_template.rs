//! Chat templates render exactly as transformers' `apply_chat_template(tokenize=False)`.
//! Expected strings: tests/data/chat/cases.json, made by tests/data/chat/generate.py with
//! transformers 5.23 (jinja2 3.1, HF's environment). Templates: the tiny fixtures' ChatML,
//! SmolLM2-135M-Instruct's (from its GGUF `tokenizer.chat_template`), and hf_features.jinja,
//! which exercises trim/lstrip blocks, python methods, namespace, loop controls, tojson,
//! raise_exception and strftime_now.

use std::path::{Path, PathBuf};

use qstream_core::chat::{apply_chat_template, ChatMessage};
use qstream_core::ErrorKind;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat")
}

fn read(name: &str) -> String {
    let p = data_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn msgs(v: &serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn renders_like_transformers() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(&read("cases.json")).unwrap();
    assert_eq!(cases.len(), 18);
    for c in &cases {
        let tpl = read(c["template"].as_str().unwrap());
        let out = apply_chat_template(
            &tpl,
            &msgs(&c["messages"]),
            c["add_generation_prompt"].as_bool().unwrap(),
            c["bos_token"].as_str().unwrap(),
            c["eos_token"].as_str().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{} {}: {e}", c["template"], c["name"]));
        assert_eq!(
            out,
            c["expected"].as_str().unwrap(),
            "{} {} agp={}",
            c["template"],
            c["name"],
            c["add_generation_prompt"]
        );
    }
}

#[test]
fn chatml_two_turns_exact() {
    // the fixture's template, as committed here (and identical to the fixture when present)
    let tpl = read("chatml.jinja");
    for fixture in [
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny/llama/chat_template.jinja"),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/tiny/llama/chat_template.jinja"),
    ] {
        if let Ok(s) = std::fs::read_to_string(&fixture) {
            assert_eq!(s, tpl, "{}", fixture.display());
        }
    }
    let m = [
        ChatMessage::new("user", "Hi!"),
        ChatMessage::new("assistant", "Hello."),
    ];
    assert_eq!(
        apply_chat_template(&tpl, &m, true, "<|im_start|>", "<|im_end|>").unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        apply_chat_template(&tpl, &m, false, "", "").unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    );
}

#[test]
fn smollm2_default_system_prompt() {
    let tpl = read("smollm2.jinja");
    let out = apply_chat_template(&tpl, &[ChatMessage::new("user", "2+2?")], true, "", "").unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let tpl = read("hf_features.jinja");
    let m = [
        ChatMessage::new("assistant", "first"),
        ChatMessage::new("user", "second"),
    ];
    let e = apply_chat_template(&tpl, &m, true, "", "").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string().contains("Conversation roles must alternate"),
        "{e}"
    );
}

#[test]
fn syntax_error_is_an_error() {
    let e = apply_chat_template("{% for m in messages %}", &[], false, "", "").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = apply_chat_template(
        "{{ messages[0].content.nosuchmethod() }}",
        &[ChatMessage::new("user", "x")],
        false,
        "",
        "",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn tools_and_documents_are_none() {
    let out = apply_chat_template(
        "{{ tools is none }} {{ documents is none }} {% if tools %}T{% endif %}",
        &[],
        false,
        "",
        "",
    )
    .unwrap();
    assert_eq!(out, "True True "); // as jinja2 prints Python bools
}

/// Gemma's template (gemma-2b-it's `tokenizer_config.json`): `bos_token` comes from the
/// caller, a system message and out-of-order roles call `raise_exception`, `assistant`
/// renders as `model`, and `| trim` binds to the content only.
#[test]
fn gemma_template_bos_roles_and_raise_exception() {
    let tpl = read("gemma.jinja");
    let conv = msgs(&serde_json::json!([
        {"role": "user", "content": "Hi there "},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"}
    ]));
    let out = apply_chat_template(&tpl, &conv, true, "<bos>", "<eos>").unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    );
    for bad in [
        serde_json::json!([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
        serde_json::json!([{"role": "assistant", "content": "a"}]),
    ] {
        let e = apply_chat_template(&tpl, &msgs(&bad), true, "<bos>", "<eos>").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let m = e.to_string();
        assert!(
            m.contains("System role not supported") || m.contains("must alternate"),
            "{m}"
        );
    }
}
