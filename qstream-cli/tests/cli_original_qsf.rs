//! The `qstream` binary on the files the original QStream converter wrote
//! (`tests/fixtures/original-qsf`), as a user holding one would use it: `info --verify`,
//! `eval`, and `convert --quant keep` to QSF v2 (same logits, bit for bit).

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qstream"))
}

fn original(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/original-qsf")
        .join(name)
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qstream-cli-orig-test-")
        .tempdir()
        .unwrap()
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("spawn qstream");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    (out, o, e)
}

fn ok(cmd: &mut Command) -> String {
    let (out, o, e) = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {o}\nstderr: {e}"
    );
    o
}

#[test]
fn info_verify_eval_and_keep_upgrade() {
    let dir = scratch();
    for (file, runs) in [
        ("llama-fp16.qsf", true),
        ("llama-4bit-lz4.qsf", true),
        ("llama-4bit_sym.qsf", true),
        ("llama-2bit_outlier.qsf", true),
        ("mistral-4bit.qsf", true),
        ("qwen2-4bit.qsf", true),
        ("phi-4bit.qsf", false),
    ] {
        let info = ok(bin().arg("info").arg(original(file)).arg("--verify"));
        assert!(info.contains("original QStream layout"), "{file}: {info}");
        assert!(info.contains("all checksums OK"), "{file}: {info}");
        let v2 = dir.path().join(format!("v2-{file}"));
        ok(bin()
            .arg("convert")
            .arg(original(file))
            .arg("-o")
            .arg(&v2)
            .args(["--quant", "keep", "--quiet"]));
        let info2 = ok(bin().arg("info").arg(&v2).arg("--verify"));
        assert!(info2.contains("QSF version 2"), "{file}: {info2}");
        assert!(info2.contains("all checksums OK"), "{file}: {info2}");
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        let ids = ["--ids", "506,216,332,232,351,155,355,16", "--out"];
        let (out, _, e) = run(bin().arg("eval").arg(original(file)).args(ids).arg(&a));
        if !out.status.success() {
            // phi: the file opens and verifies, the family does not run yet
            assert!(!runs, "{file}: {e}");
            assert!(e.contains("unsupported architecture"), "{file}: {e}");
            continue;
        }
        ok(bin().arg("eval").arg(&v2).args(ids).arg(&b));
        assert!(std::fs::metadata(&a).unwrap().len() > 8 * 512 * 4);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{file}: logits change with the upgrade"
        );
    }
    // files the converter wrote without their model's tensors: a clear refusal, no checksum error
    for file in [
        "gemma-4bit.qsf",
        "qwen2_moe-4bit.qsf",
        "deepseek_v2-4bit.qsf",
    ] {
        let (out, _, e) = run(bin().arg("info").arg(original(file)).arg("--verify"));
        assert!(!out.status.success(), "{file}");
        assert!(e.contains("unsupported architecture"), "{file}: {e}");
        assert!(!e.contains("checksum"), "{file}: {e}");
    }
}
