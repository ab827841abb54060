//! `qstream info`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use qstream_core::format::{LoadOptions, QsfFile};

#[derive(clap::Args)]
pub struct Args {
    /// QSF file
    file: PathBuf,
    /// verify every checksum
    #[arg(long)]
    verify: bool,
    /// list every tensor
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(a: Args) -> Result<()> {
    let f = QsfFile::open(&a.file, &LoadOptions::default())?;
    let h = f.header();
    let c = f.config();
    println!(
        "file:        {} ({} bytes)",
        a.file.display(),
        f.file_size()
    );
    println!(
        "format:      QSF version {}.{}{}{}",
        h.version,
        h.minor_version,
        if f.is_legacy() {
            " (original QStream layout)"
        } else {
            ""
        },
        if h.flags & 1 != 0 {
            ", LZ4-compressed layers"
        } else {
            ""
        }
    );
    println!("arch:        {}", c.arch.name());
    println!(
        "dims:        n_layer {}  n_embd {}  n_head {}  n_head_kv {}  head_dim {}  n_ff {}  n_vocab {}  n_ctx_train {}",
        c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab, c.n_ctx_train
    );
    println!(
        "norm:        {:?} eps {:e}  act {:?}  gated_mlp {}",
        c.norm, c.norm_eps, c.act, c.gated_mlp
    );
    if let Some(r) = &c.rope {
        println!(
            "rope:        theta {} dim {} {:?} scaling {:?}",
            r.theta, r.dim, r.style, r.scaling
        );
    }
    println!(
        "flags:       tied embeddings {}  qkv bias {}  qk norm {}  sliding window {:?}  moe {:?}",
        c.tie_embeddings, c.qkv_bias, c.qk_norm, c.sliding_window, c.moe
    );
    // tensors
    let mut tensors: Vec<_> = f.all_tensors()?.into_values().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut by_type: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    let (mut params, mut bytes) = (0u64, 0u64);
    for t in &tensors {
        let e = by_type
            .entry(format!("{}/b{}", t.qtype, t.block))
            .or_default();
        e.0 += 1;
        e.1 += t.numel() as u64;
        e.2 += t.bytes().len() as u64;
        params += t.numel() as u64;
        bytes += t.bytes().len() as u64;
    }
    println!(
        "weights:     {} tensors, {} params, {:.1} MB of tensor data, {:.3} bits/weight (tensors), {:.3} bits/weight (whole file)",
        tensors.len(),
        params,
        bytes as f64 / 1e6,
        bytes as f64 * 8.0 / params.max(1) as f64,
        f.file_size() as f64 * 8.0 / params.max(1) as f64
    );
    for (k, (n, p, b)) in &by_type {
        println!(
            "  {k:<16} {n:>4} tensors {p:>12} params {:>8.2} bpw",
            *b as f64 * 8.0 / (*p).max(1) as f64
        );
    }
    println!("layers:");
    for (i, e) in f.layers().iter().enumerate() {
        println!(
            "  {i:>3}: offset {:>10} stored {:>10} raw {:>10} tensors {:>2}{}",
            e.offset,
            e.stored_size,
            e.raw_size,
            e.num_tensors,
            if e.compression == 1 { " lz4" } else { "" }
        );
    }
    let tok = f.tokenizer();
    let kind = serde_json::from_str::<serde_json::Value>(&tok.tokenizer_json)
        .ok()
        .and_then(|v| v["model"]["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    println!(
        "tokenizer:   {} ({} bytes JSON), chat template {}, special {:?}",
        kind,
        tok.tokenizer_json.len(),
        tok.chat_template
            .as_ref()
            .map_or("none".to_string(), |t| format!("{} bytes", t.len())),
        tok.special_tokens
    );
    if a.verbose {
        for t in &tensors {
            println!(
                "  {:<28} {:<10} b{:<4} {:?}",
                t.name,
                t.qtype.name(),
                t.block,
                t.shape
            );
        }
    }
    if a.verify {
        f.verify()?;
        println!("verify:      all checksums OK");
    }
    Ok(())
}
