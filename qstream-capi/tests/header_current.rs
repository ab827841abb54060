//! `include/qstream.h` must equal what cbindgen generates from the current sources
//! (the rustls-ffi "ensure header updated" check, offline and inside `cargo test`).
//! `QSTREAM_BLESS=1 cargo test -p qstream-capi --test header_current` rewrites it.

use std::path::Path;

/// The version / export macros placed after the includes.
fn after_includes() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let patch = env!("CARGO_PKG_VERSION_PATCH");
    format!(
        r#"
#define QS_VERSION_MAJOR {major}
#define QS_VERSION_MINOR {minor}
#define QS_VERSION_PATCH {patch}
#define QS_VERSION_STRING "{major}.{minor}.{patch}"

#ifndef QS_API
#  if defined(_WIN32) && !defined(QS_STATIC)
#    define QS_API __declspec(dllimport)
#  elif defined(__GNUC__) || defined(__clang__)
#    define QS_API __attribute__((visibility("default")))
#  else
#    define QS_API
#  endif
#endif

#ifndef QS_DEPRECATED
#  if defined(__GNUC__) || defined(__clang__)
#    define QS_DEPRECATED(msg) __attribute__((deprecated(msg)))
#  elif defined(_MSC_VER)
#    define QS_DEPRECATED(msg) __declspec(deprecated(msg))
#  else
#    define QS_DEPRECATED(msg)
#  endif
#endif
"#
    )
}

fn generate() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(after_includes());
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed")
        .write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/qstream.h");
    let fresh = generate();
    if std::env::var_os("QSTREAM_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/qstream.h");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "include/qstream.h is stale: run QSTREAM_BLESS=1 cargo test -p qstream-capi --test header_current"
    );
}

#[test]
fn header_declares_every_export() {
    let h = generate();
    for f in [
        "qs_version",
        "qs_abi_version",
        "qs_status_str",
        "qs_last_error_message",
        "qs_clear_last_error",
        "qs_log_set",
        "qs_model_default_params",
        "qs_model_load",
        "qs_model_free",
        "qs_model_arch",
        "qs_model_n_vocab",
        "qs_model_n_ctx_train",
        "qs_model_n_params",
        "qs_model_bits_per_weight",
        "qs_model_quant_type",
        "qs_model_bos",
        "qs_model_eos",
        "qs_tokenize",
        "qs_detokenize",
        "qs_token_to_piece",
        "qs_context_new",
        "qs_context_decode",
        "qs_context_logits",
        "qs_context_cancel",
        "qs_sampler_sample",
        "qs_generate",
        "qs_generate_tokens",
        "qs_chat_apply_template",
        "qs_convert",
    ] {
        assert!(
            h.contains(&format!(" {f}(")) || h.contains(&format!("*{f}(")),
            "header lacks {f}"
        );
    }
    assert!(!h.contains("qs_test_panic"));
    assert!(h.contains(&format!(
        "#define QS_ABI_VERSION {}",
        qstream::QS_ABI_VERSION
    )));
    // build.rs sets the SONAME from its own constant; they must agree
    let build_rs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs")).unwrap();
    assert!(build_rs.contains(&format!(
        "const ABI_VERSION: u32 = {};",
        qstream::QS_ABI_VERSION
    )));
}
