//! Incoherence rotation end to end: the tiny Llama fixture converted with `rotate` stores
//! rotated tensors (data_layout 1), loads, gives the logits of its own dequantized weights
//! (the run-time rotation is exact up to activation rounding), and is as close to
//! transformers' logits as the same type without rotation; calibration statistics are
//! collected for the rotated columns.

mod tiny_fixture;

use qstream_core::convert::{calibrate, convert, convert_with_imatrix, ConvertParams, QuantChoice};
use qstream_core::engine::{Model, ModelParams, Session, SessionParams};
use qstream_core::format::{LoadOptions, QsfFile};
use qstream_core::tensor::Tensor;
use std::collections::HashMap;
use tiny_fixture::{argmax, dir, max_abs_diff, parts, reference};

/// A fresh scratch directory, removed on drop.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qstream-rotation-")
        .tempdir()
        .unwrap()
}

/// Convert the tiny Llama with `quant`/`rotate`, return (max |logit diff| vs transformers
/// over every prompt position, top-1 agreement count, positions).
fn logits_error(
    quant: &str,
    rotate: usize,
    imatrix: Option<&calibrate::Imatrix>,
) -> (f32, usize, usize) {
    let tmpdir = scratch();
    let tmp = |name: &str| tmpdir.path().join(name);
    let out = tmp(&format!("{quant}-{rotate}-{}.qsf", imatrix.is_some()));
    let params = ConvertParams {
        quant: QuantChoice::parse(quant).unwrap(),
        n_threads: 1,
        rotate,
        ..Default::default()
    };
    convert_with_imatrix(&dir("llama"), &out, &params, imatrix, &mut |_| true).unwrap();
    let f = QsfFile::open(&out, &LoadOptions::default()).unwrap();
    let ts = f.all_tensors().unwrap();
    for (name, t) in &ts {
        let matrix = t.shape.len() == 2 && !name.contains("norm");
        let want = if rotate > 0 && matrix { 64 } else { 0 }; // 64 columns, or 128 (ffn_down)
        let want = if want > 0 && t.cols() == 128 && rotate >= 128 {
            128
        } else {
            want
        };
        assert_eq!(t.rotation, want, "{name} ({quant}, rotate {rotate})");
    }
    let r = reference("llama");
    let m = Model::load(
        &out,
        &ModelParams {
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let vocab = m.config().n_vocab;
    let mut s = Session::new(m, &SessionParams::default()).unwrap();
    let logits = s.decode_all(&r.input_ids).unwrap();
    std::fs::remove_file(&out).ok();
    let agree = logits
        .chunks(vocab)
        .zip(r.logits.chunks(vocab))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    (max_abs_diff(&logits, &r.logits), agree, r.input_ids.len())
}

#[test]
fn rotated_fixture_matches_transformers_within_the_quantization_bound() {
    for quant in ["4bit", "3bit", "2bit_outlier"] {
        let (plain, agree_p, n) = logits_error(quant, 0, None);
        let (rot, agree_r, _) = logits_error(quant, 256, None);
        eprintln!("{quant}: max |diff| plain {plain:.4} ({agree_p}/{n} top-1), rotated {rot:.4} ({agree_r}/{n})");
        // the fixture's weights are random (no outliers to spread): rotation must not make
        // the error grow beyond the unrotated type's own error, with slack for chance
        assert!(
            rot <= 1.5 * plain + 0.02,
            "{quant}: rotated {rot} vs plain {plain}"
        );
        assert!(rot.is_finite());
    }
}

/// The exact check of the run-time rotation: a rotated quantized file gives the logits of
/// the same weights dequantized (and turned back) into an f32 model. Both run the exact
/// reference path (f32 activations), so only the summation order and the f32 rotation of the
/// input differ; the fast path's 8-bit activation rounding would hide a wrong rotation.
/// (Exact mode is a per-model setting here: the other tests of this file, running in
/// parallel, keep the fast path.)
#[test]
fn rotated_file_equals_its_dequantized_weights() {
    for (quant, rotate) in [
        ("4bit", 0),
        ("4bit", 256),
        ("3bit", 64),
        ("2bit_outlier", 256),
    ] {
        let tmpdir = scratch();
        let tmp = |name: &str| tmpdir.path().join(name);
        let out = tmp(&format!("exact-{quant}-{rotate}.qsf"));
        let params = ConvertParams {
            quant: QuantChoice::parse(quant).unwrap(),
            n_threads: 1,
            rotate,
            ..Default::default()
        };
        convert(&dir("llama"), &out, &params, &mut |_| true).unwrap();
        let f = QsfFile::open(&out, &LoadOptions::default()).unwrap();
        let deq: HashMap<String, Tensor> = f
            .all_tensors()
            .unwrap()
            .into_iter()
            .map(|(name, t)| {
                let v = t.to_f32().unwrap(); // rows turned back for rotated tensors
                let t32 = Tensor::from_f32(&name, t.shape.clone(), &v);
                (name, t32)
            })
            .collect();
        let (cfg, tok, _) = parts("llama");
        let reference = Model::from_parts(
            cfg,
            tok,
            deq,
            &ModelParams {
                n_threads: 2,
                exact: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        let quantized = Model::load(
            &out,
            &ModelParams {
                n_threads: 2,
                exact: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        std::fs::remove_file(&out).ok();
        let ids = reference_ids();
        let a = Session::new(reference, &SessionParams::default())
            .unwrap()
            .decode_all(&ids)
            .unwrap();
        let b = Session::new(quantized, &SessionParams::default())
            .unwrap()
            .decode_all(&ids)
            .unwrap();
        let d = max_abs_diff(&a, &b);
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!("{quant} rotate {rotate}: max |quantized file − its dequantized weights| {d:.5} (logits up to {scale:.2})");
        assert!(d < 1e-3 * scale.max(1.0), "{quant} rotate {rotate}: {d}");
    }
}

fn reference_ids() -> Vec<u32> {
    reference("llama").input_ids
}

#[test]
fn calibration_collects_rotated_statistics() {
    // an f32 QSF of the fixture for the calibration run
    let tmpdir = scratch();
    let tmp = |name: &str| tmpdir.path().join(name);
    let f32_path = tmp("calib-f32.qsf");
    let params = ConvertParams {
        quant: QuantChoice::parse("f32").unwrap(),
        n_threads: 1,
        ..Default::default()
    };
    convert(&dir("llama"), &f32_path, &params, &mut |_| true).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let im = calibrate::collect(&f32_path, &text, 32, 4, 1).unwrap();
    std::fs::remove_file(&f32_path).ok();
    let name = "blk.0.attn_q";
    let plain = im.importance(name, 64).expect("plain statistics");
    for g in [16, 32, 64] {
        let rot = im
            .importance(&calibrate::rot_name(name, g), 64)
            .expect("rotated statistics");
        // rotation is orthonormal: the total second moment is the same
        let (a, b): (f32, f32) = (plain.iter().sum(), rot.iter().sum());
        assert!((a - b).abs() < 1e-3 * a, "g {g}: {a} vs {b}");
        assert_eq!(im.rotated_importance(name, 64, g), Some(rot));
    }
    assert!(im.importance(&calibrate::rot_name(name, 128), 64).is_none());
    // ffn_down has 128 columns: g = 128 is collected
    assert!(im
        .importance(&calibrate::rot_name("blk.0.ffn_down", 128), 128)
        .is_some());
    // a rotated, calibrated conversion works end to end
    let (err, agree, n) = logits_error("3bit", 64, Some(&im));
    let (uncal, agree_u, _) = logits_error("3bit", 64, None);
    eprintln!("3bit rotate 64: max |diff| calibrated {err:.4} ({agree}/{n}), uncalibrated {uncal:.4} ({agree_u}/{n})");
    // as close to transformers as the uncalibrated rotated file, with slack for chance
    assert!(
        err <= 1.5 * uncal + 0.02,
        "calibrated {err} vs uncalibrated {uncal}"
    );
}
