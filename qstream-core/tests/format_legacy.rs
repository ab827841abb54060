//! Version-1 (original QStream) files: write the tiny Llama fixture with `write_v1` in every
//! original storage type, open it with `QsfFile::open` (mmap and read), and check that every
//! repacked tensor dequantizes bit-exactly to what the version-1 blocks encode — decoded here
//! by an independent walk over the file following docs/qsf.md §10 — that the config round-trips
//! and that the rebuilt byte-level BPE tokenizer encodes like the fixture's tokenizer.json.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use qstream_core::format::legacy::{write_v1, V1Options, V1Quant, V1Tensor, V1Vocab};
use qstream_core::format::{LoadOptions, QsfFile};
use qstream_core::model::config::{Activation, Arch, ModelConfig, NormType, RopeConfig, RopeStyle};
use qstream_core::ErrorKind;

fn fixture() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama");
    if root.exists() {
        root
    } else {
        // the shared fixtures beside the repository (`../shared` from its root)
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny/llama")
    }
}

/// A fresh scratch directory, removed on drop.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qstream-legacy-test-")
        .tempdir()
        .unwrap()
}

/// The fixture's config.json in QStream terms (RoPE scaling dropped: llama3 scaling has no
/// version-1 form).
fn config() -> ModelConfig {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    let u = |k: &str| v[k].as_u64().unwrap() as usize;
    ModelConfig {
        arch: Arch::Llama,
        n_layer: u("num_hidden_layers"),
        n_embd: u("hidden_size"),
        n_head: u("num_attention_heads"),
        n_head_kv: u("num_key_value_heads"),
        head_dim: u("head_dim"),
        n_ff: u("intermediate_size"),
        n_vocab: u("vocab_size"),
        n_ctx_train: u("max_position_embeddings"),
        norm: NormType::RmsNorm,
        norm_eps: v["rms_norm_eps"].as_f64().unwrap() as f32,
        act: Activation::Silu,
        gated_mlp: true,
        rope: Some(RopeConfig {
            theta: v["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32,
            dim: u("head_dim"),
            style: RopeStyle::Neox,
            scaling: None,
        }),
        tie_embeddings: false,
        qkv_bias: false,
        qk_norm: false,
        sliding_window: None,
        moe: None,
        bos_token_id: Some(u("bos_token_id") as u32),
        eos_token_ids: vec![u("eos_token_id") as u32],
        pad_token_id: Some(u("pad_token_id") as u32),
        add_bos: false,
        extra: Default::default(),
    }
}

/// The fixture's weights under QSF names, read with the safetensors crate.
fn tensors() -> Vec<V1Tensor> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let qname = match name.as_str() {
            "model.embed_tokens.weight" => "token_embd".to_string(),
            "lm_head.weight" => "output".to_string(),
            "model.norm.weight" => "output_norm".to_string(),
            n => {
                let rest = n.strip_prefix("model.layers.").unwrap();
                let (i, rest) = rest.split_once('.').unwrap();
                let local = match rest {
                    "input_layernorm.weight" => "attn_norm",
                    "post_attention_layernorm.weight" => "ffn_norm",
                    "self_attn.q_proj.weight" => "attn_q",
                    "self_attn.k_proj.weight" => "attn_k",
                    "self_attn.v_proj.weight" => "attn_v",
                    "self_attn.o_proj.weight" => "attn_output",
                    "mlp.gate_proj.weight" => "ffn_gate",
                    "mlp.up_proj.weight" => "ffn_up",
                    "mlp.down_proj.weight" => "ffn_down",
                    r => panic!("unexpected tensor {r}"),
                };
                format!("blk.{i}.{local}")
            }
        };
        out.push(V1Tensor {
            name: qname,
            shape: view.shape().to_vec(),
            data,
        });
    }
    out
}

fn vocab() -> V1Vocab {
    V1Vocab::from_tokenizer_json(
        &std::fs::read_to_string(fixture().join("tokenizer.json")).unwrap(),
    )
    .unwrap()
}

// ---- an independent version-1 decoder (docs/qsf.md §10, QSF-ORIGINAL.md) ----

fn rd_u16(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}
fn rd_u32(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}
fn rd_u64(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
}
fn rd_f16(b: &[u8], o: usize) -> f32 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

/// Expand bytes to their bits, least-significant bit of each byte first.
fn bits(b: &[u8]) -> Vec<u8> {
    b.iter()
        .flat_map(|&x| (0..8).map(move |k| (x >> k) & 1))
        .collect()
}

/// Decode a dense v1 tensor of original quant id `q` to f32.
fn decode_dense(q: u8, block: usize, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    if q == 7 {
        assert_eq!(data.len(), rows * cols * 2);
        return (0..rows * cols).map(|i| rd_f16(data, 2 * i)).collect();
    }
    let bits_per = match q {
        0 => 2,
        2 => 3,
        3 | 4 => 4,
        6 => 8,
        _ => panic!("type {q}"),
    };
    let bb = 4 + block * bits_per / 8;
    let nb = cols.div_ceil(block);
    assert_eq!(data.len(), rows * nb * bb, "dense size");
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for b in 0..nb {
            let blk = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
            let (s, z) = (rd_f16(blk, 0), rd_f16(blk, 2));
            let stream = bits(&blk[4..]);
            for i in 0..block {
                if b * block + i >= cols {
                    break;
                }
                let level =
                    (0..bits_per).fold(0u32, |acc, k| acc | (stream[i * bits_per + k] as u32) << k);
                out.push(if q == 4 {
                    // signed two's-complement nibble, scale only
                    let signed = if level >= 8 {
                        level as i32 - 16
                    } else {
                        level as i32
                    };
                    s * signed as f32
                } else {
                    s * level as f32 + z
                });
            }
        }
    }
    out
}

/// Decode a v1 tensor (dense or outlier) to f32.
fn decode(q: u8, block: usize, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    if q == 9 || q == 10 {
        let n = rd_u32(data, 0);
        let dense = &data[4 + 6 * n..];
        let mut v = decode_dense(if q == 9 { 0 } else { 3 }, block, dense, rows, cols);
        for k in 0..n {
            let o = 4 + 6 * k;
            v[rd_u32(data, o)] = rd_f16(data, o + 4);
        }
        return v;
    }
    decode_dense(q, block, data, rows, cols)
}

fn kind_name(k: usize) -> &'static str {
    [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
        "attn_norm",
        "ffn_norm",
    ][k]
}

/// Walk a v1 file and decode every tensor by its global name.
fn decode_file(b: &[u8]) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    assert_eq!(&b[0..4], b"1FSQ");
    assert_eq!(rd_u32(b, 4), 1);
    assert!(
        b[184..256].iter().all(|&x| x == 0),
        "v2 extension area must be zero"
    );
    let (n_layer, hidden, vocab, qt, block) = (
        rd_u32(b, 16),
        rd_u32(b, 20),
        rd_u32(b, 32),
        b[48],
        rd_u32(b, 60),
    );
    let eo = rd_u64(b, 72);
    let (eq, esize) = (rd_u32(b, eo) as u8, rd_u32(b, eo + 4));
    assert_eq!((rd_u32(b, eo + 8), rd_u32(b, eo + 12)), (vocab, hidden));
    let table = &b[eo + 32..eo + 32 + esize];
    assert_eq!(rd_u32(b, eo + 20) as u32, crc32fast::hash(table));
    out.insert(
        "token_embd".to_string(),
        decode(eq, block, table, vocab, hidden),
    );
    for i in 0..n_layer {
        let e = 256 + 48 * i;
        let (off, csize, dsize, lq, comp, nt) = (
            rd_u64(b, e),
            rd_u32(b, e + 8),
            rd_u32(b, e + 12),
            b[e + 16],
            b[e + 17],
            rd_u16(b, e + 18),
        );
        assert_eq!(off % 64, 0);
        assert!(
            b[e + 40..e + 48].iter().all(|&x| x == 0),
            "reserved index bytes"
        );
        let stored = &b[off..off + csize];
        let raw = if comp == 1 {
            lz4_flex::block::decompress(stored, dsize).unwrap()
        } else {
            stored.to_vec()
        };
        assert_eq!(raw.len(), dsize);
        let mut p = 0;
        for _ in 0..nt {
            let (kind, q, rows, cols, size) = (
                rd_u16(&raw, p),
                raw[p + 2],
                rd_u32(&raw, p + 4),
                rd_u32(&raw, p + 8),
                rd_u32(&raw, p + 12),
            );
            let q = if q == 0xFF { lq } else { q };
            let data = &raw[p + 24..p + 24 + size];
            p += 24 + size;
            out.insert(
                format!("blk.{i}.{}", kind_name(kind)),
                decode(q, block, data, rows, cols),
            );
        }
        assert_eq!(p, raw.len(), "layer {i} fully consumed");
    }
    let fo = rd_u64(b, 80);
    let (ht, ns, hs) = (rd_u32(b, fo), rd_u32(b, fo + 4), rd_u32(b, fo + 8));
    assert_eq!(ht, 0);
    let body = &b[fo + 16..fo + 16 + ns + hs];
    assert_eq!(rd_u32(b, fo + 12) as u32, crc32fast::hash(body));
    assert_eq!(fo + 16 + ns + hs, b.len(), "final section ends the file");
    out.insert(
        "output_norm".to_string(),
        decode(7, block, &body[..ns], 1, hidden),
    );
    out.insert(
        "output".to_string(),
        decode(qt, block, &body[ns..], vocab, hidden),
    );
    out
}

fn check_roundtrip(quant: V1Quant, block: usize, compress: bool, max_rel_rmse: f64) {
    let cfg = config();
    let src = tensors();
    let tmpdir = scratch();
    let path = tmpdir
        .path()
        .join(format!("tiny-{quant:?}-{block}-{compress}.qsf"));
    let opts = V1Options {
        quant,
        block,
        compress,
        outlier_frac: 0.01,
    };
    let size = write_v1(&path, &cfg, &vocab(), &src, &opts).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(size as usize, bytes.len());
    // `QSTREAM_FUZZ_SEED_DIR=fuzz/corpus/qsf_open cargo test --test format_legacy` seeds the fuzzer
    if let Some(d) = std::env::var_os("QSTREAM_FUZZ_SEED_DIR") {
        std::fs::copy(&path, Path::new(&d).join(path.file_name().unwrap())).unwrap();
    }
    let expected = decode_file(&bytes);
    assert_eq!(expected.len(), src.len());
    for use_mmap in [true, false] {
        let f = QsfFile::open(
            &path,
            &LoadOptions {
                use_mmap,
                verify_checksums: true,
            },
        )
        .unwrap();
        assert!(f.is_legacy());
        assert_eq!(f.header().version, 1);
        assert_eq!(f.config(), &cfg, "config round-trip");
        f.verify().unwrap();
        let n_lz4 = f.layers().iter().filter(|e| e.compression == 1).count();
        assert_eq!(n_lz4 > 0, compress, "LZ4 layers: {n_lz4}");
        let all = f.all_tensors().unwrap();
        assert_eq!(all.len(), src.len());
        for s in &src {
            let t = &all[&s.name];
            assert_eq!(t.shape, s.shape, "{}", s.name);
            let got = t.to_f32().unwrap();
            let want = &expected[&s.name];
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} ({:?} {}) value {k}: {g} vs {w}",
                    s.name,
                    quant,
                    t.qtype
                );
            }
            // and the file is a faithful encoding of the source weights
            let (mut err, mut norm) = (0f64, 0f64);
            for (g, x) in got.iter().zip(&s.data) {
                err += ((g - x) as f64).powi(2);
                norm += (*x as f64).powi(2);
            }
            let rel = (err / norm.max(1e-30)).sqrt();
            let limit = if s.shape.len() == 1 {
                1e-3
            } else {
                max_rel_rmse
            };
            assert!(rel < limit, "{} {:?}: relative RMSE {rel}", s.name, quant);
        }
    }
}

#[test]
fn q4_block64_roundtrip() {
    check_roundtrip(V1Quant::Q4, 64, false, 0.12);
}

#[test]
fn q4_block64_lz4_roundtrip() {
    check_roundtrip(V1Quant::Q4, 64, true, 0.12);
}

#[test]
fn other_types_roundtrip() {
    check_roundtrip(V1Quant::Q2, 64, false, 0.6);
    check_roundtrip(V1Quant::Q3, 64, true, 0.3);
    check_roundtrip(V1Quant::Q4Sym, 32, false, 0.15);
    check_roundtrip(V1Quant::Q8, 64, false, 0.01);
    check_roundtrip(V1Quant::F16, 64, false, 1e-3);
    check_roundtrip(V1Quant::Q2Outlier, 32, false, 0.6);
    check_roundtrip(V1Quant::Q4Outlier, 128, true, 0.12);
}

#[test]
fn tokenizer_matches_fixture() {
    let tmpdir = scratch();
    let path = tmpdir.path().join("tok.qsf");
    write_v1(
        &path,
        &config(),
        &vocab(),
        &tensors(),
        &V1Options::default(),
    )
    .unwrap();
    let f = QsfFile::open(&path, &LoadOptions::default()).unwrap();
    let ours = tokenizers::Tokenizer::from_bytes(f.tokenizer().tokenizer_json.as_bytes()).unwrap();
    let theirs = tokenizers::Tokenizer::from_file(fixture().join("tokenizer.json")).unwrap();
    for text in [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
        "  leading spaces, tabs\tand\nnewlines ",
        "unicode: café, naïve, 東京",
        "",
    ] {
        let a = ours.encode(text, false).unwrap();
        let b = theirs.encode(text, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        assert_eq!(
            ours.decode(a.get_ids(), false).unwrap(),
            text,
            "decode {text:?}"
        );
    }
    let roles: HashMap<_, _> = f.tokenizer().special_tokens.iter().cloned().collect();
    assert_eq!(roles["bos"], "<|im_start|>");
    assert_eq!(roles["eos"], "<|im_end|>");
}

fn open_err(bytes: &[u8], name: &str) -> qstream_core::Error {
    let tmpdir = scratch();
    let p = tmpdir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let r = QsfFile::open(&p, &LoadOptions::default());
    match r {
        Ok(_) => panic!("{name}: corrupt file opened"),
        Err(e) => e,
    }
}

/// Rewrite the header CRC after an edit of bytes 0..168.
fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[..168]);
    b[168..172].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn rejects_bad_version1_files() {
    let tmpdir = scratch();
    let path = tmpdir.path().join("bad.qsf");
    write_v1(
        &path,
        &config(),
        &vocab(),
        &tensors(),
        &V1Options::default(),
    )
    .unwrap();
    let good = std::fs::read(&path).unwrap();

    // header CRC mismatch is an error (the original only warned)
    let mut b = good.clone();
    b[20] ^= 1;
    assert_eq!(open_err(&b, "crc").kind(), ErrorKind::Checksum);

    // truncation
    for cut in [100, 300, good.len() / 2, good.len() - 1] {
        assert_eq!(
            open_err(&good[..cut], "cut").kind(),
            ErrorKind::Corrupt,
            "cut {cut}"
        );
    }

    // a merge naming an unknown token (merges are not covered by a CRC)
    let to = rd_u64(&good, 88);
    let (vocab_data, n_merges) = (rd_u32(&good, to + 16), rd_u32(&good, to + 8));
    assert!(n_merges > 0);
    let m0 = to + 32 + vocab_data + 4;
    let mut b = good.clone();
    b[m0..m0 + 4].copy_from_slice(&100_000u32.to_le_bytes());
    let e = open_err(&b, "merge");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("unknown token"), "{e}");
    // a merge whose result is not the concatenation
    let mut b = good.clone();
    b[m0 + 8..m0 + 12].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(open_err(&b, "merge2").kind(), ErrorKind::Corrupt);

    // a flipped bit in layer data: layer CRC
    let l0 = rd_u64(&good, 256);
    let mut b = good.clone();
    b[l0 + 100] ^= 0x10;
    assert_eq!(open_err(&b, "layer").kind(), ErrorKind::Checksum);

    // unknown quant type in a tensor header (CRCs fixed up so the structure check is reached)
    let set_layer = |b: &mut Vec<u8>, edit: &dyn Fn(&mut [u8])| {
        let size = rd_u32(b, 256 + 8);
        edit(&mut b[l0..l0 + size]);
        let crc = crc32fast::hash(&b[l0..l0 + size]);
        b[256 + 20..256 + 24].copy_from_slice(&crc.to_le_bytes());
        b[256 + 24..256 + 28].copy_from_slice(&crc.to_le_bytes());
    };
    let mut b = good.clone();
    set_layer(&mut b, &|l| l[2] = 42);
    assert_eq!(open_err(&b, "qt").kind(), ErrorKind::UnsupportedQuant);
    let mut b = good.clone();
    set_layer(&mut b, &|l| l[2] = 5); // ternary: defined by the original, not read
    assert_eq!(open_err(&b, "ternary").kind(), ErrorKind::UnsupportedQuant);
    // tensor type ids past the fixed ones are per-expert tensors, which are not read
    let mut b = good.clone();
    set_layer(&mut b, &|l| l[0..2].copy_from_slice(&5000u16.to_le_bytes()));
    assert_eq!(open_err(&b, "kind").kind(), ErrorKind::UnsupportedArch);
    // data_size inconsistent with the type and shape
    let mut b = good.clone();
    set_layer(&mut b, &|l| l[4] += 1); // rows + 1
    assert_eq!(open_err(&b, "rows").kind(), ErrorKind::Corrupt);
    // a tensor header running past the layer
    let mut b = good.clone();
    set_layer(&mut b, &|l| {
        l[12..16].copy_from_slice(&u32::MAX.to_le_bytes())
    });
    assert_eq!(open_err(&b, "size").kind(), ErrorKind::Corrupt);

    // offsets near u64::MAX (header CRC fixed so the offset check is reached)
    for field in [72usize, 80, 88] {
        let mut b = good.clone();
        b[field..field + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        fix_header_crc(&mut b);
        assert_eq!(
            open_err(&b, "off").kind(),
            ErrorKind::Corrupt,
            "field {field}"
        );
    }
    // num_layers absurd
    let mut b = good.clone();
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_header_crc(&mut b);
    assert_eq!(open_err(&b, "nl").kind(), ErrorKind::Corrupt);
    // two layers sharing one section (index entry 1 copied from entry 0)
    let mut b = good.clone();
    b.copy_within(256..256 + 48, 256 + 48);
    let e = open_err(&b, "ovl");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("overlap"), "{e}");
}
