//! `qstream info` on bad files: a non-zero exit and exactly one clear `error: ...` line on
//! stderr, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use qstream_core::convert::{convert, ConvertParams, QuantChoice};
use qstream_core::quant::QuantType;

fn fixture() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama");
    if root.exists() {
        root
    } else {
        // the shared fixtures beside the repository (`../shared` from its root)
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny/llama")
    }
}

/// Run `qstream info [--verify] path`: (exit success, stdout, stderr).
fn info(path: &Path, verify: bool) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qstream"));
    cmd.arg("info");
    if verify {
        cmd.arg("--verify");
    }
    let out = cmd.arg(path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Assert `qstream info` fails with one `error:` line mentioning `needle` (case-insensitive).
fn assert_fails(path: &Path, verify: bool, needle: &str) {
    let (ok, _out, err) = info(path, verify);
    assert!(!ok, "{}: exit status success", path.display());
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].to_lowercase().contains(needle),
        "{err:?} should mention {needle:?}"
    );
}

#[test]
fn info_reports_bad_files_in_one_line() {
    let tmp = tempfile::Builder::new()
        .prefix("qstream-cli-errors-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let good = dir.join("good.qsf");
    let params = ConvertParams {
        quant: QuantChoice::Type(QuantType::Q4),
        compress: true,
        n_threads: 1,
        ..Default::default()
    };
    convert(&fixture(), &good, &params, &mut |_| true).unwrap();
    let (ok, out, err) = info(&good, true);
    assert!(ok, "valid file: {err}");
    assert!(!out.is_empty());
    let bytes = std::fs::read(&good).unwrap();

    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    assert_fails(&dir.join("missing.qsf"), false, "not found");
    assert_fails(&write("empty.qsf", &[]), false, "corrupt");
    assert_fails(
        &write("trunc.qsf", &bytes[..bytes.len() / 2]),
        false,
        "truncated",
    );
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_fails(&write("magic.qsf", &b), false, "magic");
    let mut b = bytes.clone();
    b[20] ^= 1;
    assert_fails(&write("crc.qsf", &b), false, "checksum");
    // a flipped byte near the end (inside the final section's tensor data): only --verify sees it
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 100] ^= 0x55;
    let p = write("data.qsf", &b);
    assert!(
        info(&p, false).0,
        "without --verify the structure is intact"
    );
    assert_fails(&p, true, "checksum");
    assert_fails(dir, false, "directory");
}
