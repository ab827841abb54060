//! `qstream eval --trace` / `--compare TRACE` on the tiny llama fixture.
//!
//! There is no transformers trace in the repository (making one needs torch:
//! tests/make_trace.py), so the trace is checked by what must hold for it:
//! - the last layer's hidden states, put through the fixture's final RMSNorm and LM head
//!   (computed here from model.safetensors), give transformers' reference logits;
//! - a trace compared with itself passes, every layer;
//! - a reference trace perturbed at layer `l` is reported as departing first at `l`;
//! - a model whose block 1 is altered (its MLP down-projection scaled) departs first at
//!   layer 1, layer 0 still matching — the use `--compare` is for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qstream"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny")
        .join(name)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn qstream");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn convert(src: &Path, dst: &Path) {
    let (ok, text) = run(bin()
        .arg("convert")
        .arg(src)
        .arg("-o")
        .arg(dst)
        .args(["--quant", "f32", "--quiet"]));
    assert!(ok, "convert {}: {text}", src.display());
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// name → (shape, f32 values) of every F32 tensor in a safetensors file.
fn read_f32(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32)
        .map(|(n, v)| (n, (v.shape().to_vec(), f32s(v.data()))))
        .collect()
}

/// Write f32 tensors (+ the reference's int64 input_ids) as safetensors.
fn write(path: &Path, tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>, ids: Option<&[u8]>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    if let Some(ids) = ids {
        views.push((
            "input_ids".into(),
            TensorView::new(Dtype::I64, vec![1, ids.len() / 8], ids).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn input_id_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("input_ids").unwrap().data().to_vec()
}

#[test]
fn trace_is_the_residual_stream_and_compare_finds_the_departing_layer() {
    let dir = tempfile::Builder::new()
        .prefix("qstream-trace-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let fx = fixture("llama");
    let reference = fx.join("reference.safetensors");
    let qsf = d.join("llama.qsf");
    convert(&fx, &qsf);

    // Trace, with the logits checked against transformers on the way.
    let trace = d.join("trace.safetensors");
    let (ok, text) = run(bin()
        .arg("eval")
        .arg(&qsf)
        .arg("--trace")
        .arg(&trace)
        .arg("--compare")
        .arg(&reference));
    assert!(ok && text.contains("top-1 agreement 24/24"), "{text}");
    let tr = read_f32(&trace);
    let (hs, hidden) = &tr["hidden_states"];
    let (ls, logits) = &tr["logits"];
    let (n_layer, t, e) = (hs[0], hs[1], hs[2]);
    assert_eq!((n_layer, t, e), (2, 24, 64));
    let vocab = ls[1];
    assert_eq!(ls, &vec![t, vocab]);

    // Last layer → final RMSNorm → LM head (from the fixture's own tensors) = the logits.
    let w = read_f32(&fx.join("model.safetensors"));
    let norm = &w["model.norm.weight"].1;
    let head = &w["lm_head.weight"].1;
    let want = read_f32(&reference);
    let ref_logits = &want["logits"].1;
    let eps = 1e-6f64; // config.json rms_norm_eps
    let mut worst = 0f64;
    let scale = ref_logits.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    for p in 0..t {
        let x = &hidden[((n_layer - 1) * t + p) * e..((n_layer - 1) * t + p + 1) * e];
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / e as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        let xn: Vec<f64> = x
            .iter()
            .zip(norm)
            .map(|(&v, &g)| v as f64 * inv * g as f64)
            .collect();
        for v in 0..vocab {
            let row = &head[v * e..(v + 1) * e];
            let z: f64 = row.iter().zip(&xn).map(|(&a, b)| a as f64 * b).sum();
            worst = worst.max((z - ref_logits[p * vocab + v] as f64).abs());
            let ours = logits[p * vocab + v] as f64;
            assert!(
                (z - ours).abs() <= 1e-4 * scale,
                "position {p} token {v}: head(norm(last hidden)) {z} vs eval's logit {ours}"
            );
        }
    }
    assert!(
        worst <= 1e-4 * scale,
        "head(norm(last layer)) vs transformers: {worst}"
    );
    eprintln!("last-layer trace → norm → head vs transformers logits: max |diff| {worst:.2e}");

    // Compared with itself: every layer within tolerance.
    let (ok, text) = run(bin().arg("eval").arg(&qsf).arg("--compare").arg(&trace));
    assert!(ok && text.contains("every layer within tol"), "{text}");

    // A reference perturbed at layer l departs first at l.
    let ids = input_id_bytes(&trace);
    for l in 0..n_layer {
        let mut bad = tr.clone();
        let h = &mut bad.get_mut("hidden_states").unwrap().1;
        let m = h[l * t * e..(l + 1) * t * e]
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()));
        h[(l * t + 7) * e + 3] += 1e-2 * m;
        let p = d.join(format!("perturbed{l}.safetensors"));
        write(&p, &bad, Some(&ids));
        let (ok, text) = run(bin().arg("eval").arg(&qsf).arg("--compare").arg(&p));
        assert!(!ok, "perturbed layer {l} accepted: {text}");
        assert!(
            text.contains(&format!(
                "first layer that departs from the reference: {l} "
            )),
            "{text}"
        );
    }

    // A model with block 1 altered: layer 0 matches, layer 1 departs.
    let alt = d.join("llama-alt");
    std::fs::create_dir(&alt).unwrap();
    for f in std::fs::read_dir(&fx).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, alt.join(f.file_name().unwrap())).unwrap();
    }
    let mut w2 = w.clone();
    for v in &mut w2.get_mut("model.layers.1.mlp.down_proj.weight").unwrap().1 {
        *v *= 1.01;
    }
    write(&alt.join("model.safetensors"), &w2, None);
    let alt_qsf = d.join("llama-alt.qsf");
    convert(&alt, &alt_qsf);
    let (ok, text) = run(bin().arg("eval").arg(&alt_qsf).arg("--compare").arg(&trace));
    assert!(!ok, "altered model accepted: {text}");
    assert!(
        text.contains("first layer that departs from the reference: 1 "),
        "{text}"
    );
    let line0 = text
        .lines()
        .skip_while(|l| !l.starts_with("layer  max|diff|"))
        .nth(1)
        .unwrap_or_default();
    let rel0: f32 = line0
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(f32::NAN);
    assert!(rel0 <= 1e-6, "layer 0 of the altered model: {line0}");
}
