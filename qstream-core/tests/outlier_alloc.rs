//! `convert --quant 2bit_outlier` spreads its outlier budget over all outlier tensors
//! (`--outlier-alloc global`, the default) or keeps `--outlier-frac` of each tensor
//! (`tensor`): on the tiny Llama fixture both files hold the same number of outliers (so
//! the same size, up to alignment), the global one moves them between tensors and leaves less total
//! quantization error.

mod tiny_fixture;

use std::collections::HashMap;
use std::path::Path;

use qstream_core::convert::{convert, ConvertParams, OutlierAlloc, QuantChoice};
use qstream_core::format::{LoadOptions, QsfFile};
use qstream_core::quant::outlier::{count_for, OutlierView};
use tiny_fixture::dir;

/// Per outlier tensor: (outlier count, numel, squared error against `reference`).
fn outliers(
    path: &Path,
    reference: &HashMap<String, Vec<f32>>,
) -> HashMap<String, (usize, usize, f64)> {
    let f = QsfFile::open(path, &LoadOptions::default()).unwrap();
    f.all_tensors()
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.qtype.is_outlier())
        .map(|(name, t)| {
            let v = OutlierView::parse(t.qtype, t.block, t.bytes(), t.rows(), t.cols()).unwrap();
            let err = t
                .to_f32()
                .unwrap()
                .iter()
                .zip(&reference[&name])
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            (name, (v.n_outliers(), t.numel(), err))
        })
        .collect()
}

#[test]
fn global_allocation_keeps_the_budget_and_lowers_the_error() {
    let tmp = tempfile::Builder::new()
        .prefix("qstream-oalloc-")
        .tempdir()
        .unwrap();
    let f32_path = tmp.path().join("f32.qsf");
    let p = |quant: &str, alloc| ConvertParams {
        quant: QuantChoice::parse(quant).unwrap(),
        outlier_frac: 0.02,
        outlier_alloc: alloc,
        n_threads: 1,
        ..Default::default()
    };
    convert(
        &dir("llama"),
        &f32_path,
        &p("f32", OutlierAlloc::Global),
        &mut |_| true,
    )
    .unwrap();
    let reference: HashMap<String, Vec<f32>> = QsfFile::open(&f32_path, &LoadOptions::default())
        .unwrap()
        .all_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_f32().unwrap()))
        .collect();

    let mut stats = Vec::new();
    let mut sizes = Vec::new();
    for alloc in [OutlierAlloc::PerTensor, OutlierAlloc::Global] {
        let path = tmp.path().join(format!("{alloc:?}.qsf"));
        convert(&dir("llama"), &path, &p("2bit_outlier", alloc), &mut |_| {
            true
        })
        .unwrap();
        sizes.push(std::fs::metadata(&path).unwrap().len());
        stats.push(outliers(&path, &reference));
    }
    let (own, global) = (&stats[0], &stats[1]);
    assert!(own.len() >= 10, "{} outlier tensors", own.len());
    for (name, (k, numel, _)) in own {
        assert_eq!(*k, count_for(0.02, *numel), "{name}");
    }
    let total = |s: &HashMap<String, (usize, usize, f64)>| s.values().map(|v| v.0).sum::<usize>();
    assert_eq!(total(own), total(global));
    // 6 bytes per outlier, the rest of the layout fixed: the same size up to each tensor's
    // alignment padding
    let pad = qstream_core::format::ALIGN * own.len() as u64;
    assert!(sizes[0].abs_diff(sizes[1]) < pad, "{sizes:?}");
    let moved = own.iter().filter(|(n, v)| global[*n].0 != v.0).count();
    assert!(moved > 0, "the global allocation changed nothing");
    let err = |s: &HashMap<String, (usize, usize, f64)>| s.values().map(|v| v.2).sum::<f64>();
    assert!(
        err(global) < err(own),
        "global {} vs per tensor {}",
        err(global),
        err(own)
    );
}
