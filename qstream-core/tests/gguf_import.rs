//! GGUF importer tests: dequantization against gguf-py (bit-exact), names/shapes, native
//! (bit-exact keep) tensors, config, malformed files, and the real SmolLM2 GGUF if present.
//!
//! Test data: tests/data/gguf/make_refs.py (gguf-py) wrote quant_types.gguf.bin, quant_refs.*
//! and smollm2_samples.json.

mod common;

use std::path::{Path, PathBuf};

use qstream_core::import::gguf::{
    canonical_shape, ggml_type_name, GgufFile, GgufModel, MetaValue, Transform,
};
use qstream_core::import::ModelSource;
use qstream_core::model::config::{Arch, RopeStyle};
use qstream_core::quant::{self, QuantType};
use qstream_core::{Error, ErrorKind};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gguf")
        .join(p)
}

struct RefTensor {
    name: String,
    ty: String,
    ne: Vec<u64>,
    values: Vec<f32>,
}

fn refs() -> Vec<RefTensor> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("quant_refs.json")).unwrap()).unwrap();
    let raw = std::fs::read(data("quant_refs.bin")).unwrap();
    let all: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let off = t["offset"].as_u64().unwrap() as usize;
            let len = t["len"].as_u64().unwrap() as usize;
            RefTensor {
                name: t["name"].as_str().unwrap().to_owned(),
                ty: t["type"].as_str().unwrap().to_owned(),
                ne: t["ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                values: all[off..off + len].to_vec(),
            }
        })
        .collect()
}

fn canon(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

/// Apply the importer's row transform to stored rows (`data` holds `rows` equal rows):
/// `LlamaModel.permute` reversed — within each head of `head_dim` rows, canonical row
/// `h·n_rot/2 + j` is stored row `2j + h`.
fn canonical_rows<T: Copy>(data: &[T], rows: usize, t: Transform) -> Vec<T> {
    let Transform::Unpermute {
        head_dim, n_rot, ..
    } = t
    else {
        assert_eq!(t, Transform::None);
        return data.to_vec();
    };
    let w = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for r in 0..rows {
        let (head, i) = (r / head_dim, r % head_dim);
        let half = n_rot / 2;
        let src = if i < n_rot {
            2 * (i % half) + i / half
        } else {
            i
        };
        let s = head * head_dim + src;
        out.extend_from_slice(&data[s * w..(s + 1) * w]);
    }
    out
}

fn assert_bits_eq(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{name}[{i}]: got {g:e}, gguf-py {w:e}"
        );
    }
}

#[test]
fn dequantize_every_type_matches_gguf_py_bit_exactly() {
    let m = GgufModel::open(&data("quant_types.gguf.bin")).unwrap();
    let refs = refs();
    let mut types_seen = std::collections::BTreeSet::new();
    for r in &refs {
        let got = m.load_f32(canon(&r.name)).unwrap();
        let rows = canonical_shape(&r.ne)[0];
        let want = canonical_rows(&r.values, rows, m.transform(canon(&r.name)).unwrap());
        assert_bits_eq(&r.name, &got, &want);
        types_seen.insert(r.ty.clone());
        // Source type and canonical shape.
        let st = m
            .tensors()
            .iter()
            .find(|t| t.name == canon(&r.name))
            .unwrap();
        assert_eq!(st.source_type, r.ty);
        let mut rev: Vec<usize> = r.ne.iter().rev().map(|&d| d as usize).collect();
        if rev.len() > 2 {
            let rows = rev[..rev.len() - 1].iter().product();
            rev = vec![rows, rev[rev.len() - 1]];
        }
        assert_eq!(st.shape, rev, "{}", r.name);
    }
    for t in [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K", "MXFP4",
    ] {
        assert!(types_seen.contains(t), "test data lacks {t}");
    }
}

#[test]
fn names_and_shapes() {
    let m = GgufModel::open(&data("quant_types.gguf.bin")).unwrap();
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"token_embd"));
    assert!(names.contains(&"blk.0.attn_q"));
    assert!(names.contains(&"blk.0.attn_q.bias"));
    assert!(names.contains(&"output_norm"));
    let q = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.ffn_gate")
        .unwrap();
    assert_eq!(q.shape, vec![128, 64]); // GGUF ne = [64, 128]
    let b = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_q.bias")
        .unwrap();
    assert_eq!(b.shape, vec![64]);
    let e = m.tensors().iter().find(|t| t.name == "test.exps").unwrap();
    assert_eq!(e.shape, vec![6, 32]); // ne = [32, 3, 2]: 2 experts × 3 rows
    assert_eq!(canonical_shape(&[7, 5]), vec![5, 7]);
    // Unknown names are an error, not a panic.
    assert_eq!(
        m.load_f32("blk.9.nothing").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn native_tensors_are_the_file_bytes_and_decode_like_ggml() {
    let m = GgufModel::open(&data("quant_types.gguf.bin")).unwrap();
    let refs = refs();
    let expect = |ty: &str| match ty {
        "Q4_1" => Some((QuantType::Q4, 32)),
        "Q4_0" => Some((QuantType::Q4Sym, 32)),
        "Q8_0" => Some((QuantType::Q8, 32)),
        "F32" => Some((QuantType::F32, 1)),
        "F16" => Some((QuantType::F16, 1)),
        "BF16" => Some((QuantType::Bf16, 1)),
        "MXFP4" => Some((QuantType::Mxfp4, 32)),
        _ => None,
    };
    for r in &refs {
        let name = canon(&r.name);
        let native = m.load_native(name).unwrap();
        match (expect(&r.ty), native) {
            (None, None) => {}
            (Some((qt, block)), Some(n)) => {
                assert_eq!((n.qtype, n.block), (qt, block), "{name}");
                let info = m.tensor_info(name).unwrap();
                let cols = r.ne[0] as usize;
                let rows = r.values.len() / cols;
                let tr = m.transform(name).unwrap();
                let canon_rows = canonical_shape(&r.ne)[0];
                assert_eq!(
                    n.bytes,
                    canonical_rows(m.file().tensor_bytes(info), canon_rows, tr),
                    "{name}: bytes copied (rows moved as {tr:?})"
                );
                // QSF's own decoder of those bytes gives ggml's values.
                let ours = quant::dequantize(qt, block, &n.bytes, rows, cols).unwrap();
                assert_bits_eq(name, &ours, &canonical_rows(&r.values, canon_rows, tr));
            }
            (e, n) => panic!(
                "{name} ({}): expected {e:?}, got {:?}",
                r.ty,
                n.map(|n| n.qtype)
            ),
        }
    }
}

#[test]
fn config_and_metadata_of_test_file() {
    let m = GgufModel::open(&data("quant_types.gguf.bin")).unwrap();
    let c = m.config();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layer, c.n_embd, c.n_ff), (1, 64, 128));
    assert_eq!((c.n_head, c.n_head_kv, c.head_dim), (4, 2, 16));
    assert_eq!(c.n_ctx_train, 256);
    assert_eq!(c.norm_eps, 1e-6);
    let rope = c.rope.as_ref().unwrap();
    assert_eq!(
        (rope.theta, rope.dim, rope.style),
        (10000.0, 16, RopeStyle::Neox)
    );
    // llama q/k rows are un-permuted (LlamaModel.permute reversed), the rest as stored.
    assert_eq!(
        m.transform("blk.0.attn_q").unwrap(),
        Transform::Unpermute {
            n_head: 4,
            head_dim: 16,
            n_rot: 16
        }
    );
    assert_eq!(m.transform("blk.0.attn_v").unwrap(), Transform::None);
    assert!(c.tie_embeddings, "no output.weight");
    assert!(c.qkv_bias);
    assert!(!c.qk_norm);
    assert_eq!(c.n_vocab, 9); // no llama.vocab_size: length of the token list
    assert_eq!(c.bos_token_id, Some(0));
    assert_eq!(c.eos_token_ids, vec![0, 8]); // eos + <|im_end|>
    assert!(!c.add_bos, "gpt2 vocabularies default to no BOS");
    // Metadata accessor, nested arrays.
    let md = m.metadata();
    assert_eq!(md["test.nested_marker"], MetaValue::U32(7));
    let nested = md["test.nested"].as_array().unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[1].as_array().unwrap()[2].as_i64(), Some(5));
    assert_eq!(m.file().version(), 3);
    assert_eq!(m.file().alignment(), 32);
    assert_eq!(
        m.tokenizer().chat_template.as_deref(),
        Some("{{ messages }}")
    );
    // Tokenizer JSON parses and knows the control tokens.
    let tok: tokenizers::Tokenizer = m.tokenizer().tokenizer_json.parse().unwrap();
    let ids = tok.encode("ab<|im_end|> abc", false).unwrap();
    assert_eq!(ids.get_ids(), &[5, 8, 4, 7]);
}

// ---------- malformed files ----------

/// Minimal GGUF writer for crafting bad files.
struct Builder {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            kv: vec![],
            n_kv: 0,
            infos: vec![],
            n_tensors: 0,
            data: vec![],
        }
    }
    fn s(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    fn kv_u32(mut self, k: &str, v: u32) -> Self {
        Self::s(&mut self.kv, k);
        self.kv.extend_from_slice(&4u32.to_le_bytes());
        self.kv.extend_from_slice(&v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_raw(mut self, k: &str, ty: u32, raw: &[u8]) -> Self {
        Self::s(&mut self.kv, k);
        self.kv.extend_from_slice(&ty.to_le_bytes());
        self.kv.extend_from_slice(raw);
        self.n_kv += 1;
        self
    }
    fn tensor(mut self, name: &str, ne: &[u64], ty: u32, off: u64) -> Self {
        Self::s(&mut self.infos, name);
        self.infos
            .extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in ne {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.to_le_bytes());
        self.infos.extend_from_slice(&off.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    fn data(mut self, n: usize) -> Self {
        self.data = vec![0u8; n];
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.n_tensors.to_le_bytes());
        b.extend_from_slice(&self.n_kv.to_le_bytes());
        b.extend_from_slice(&self.kv);
        b.extend_from_slice(&self.infos);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend_from_slice(&self.data);
        b
    }
}

fn open_bytes(tag: &str, bytes: &[u8]) -> Result<GgufFile, Error> {
    let dir = tempfile::Builder::new()
        .prefix("qstream-gguf-test-")
        .tempdir()
        .unwrap();
    let p = dir.path().join(format!("{tag}.gguf"));
    std::fs::write(&p, bytes).unwrap();
    GgufFile::open(&p)
}

#[test]
fn valid_crafted_file_parses() {
    let b = Builder::new()
        .kv_u32("a.b", 5)
        .tensor("x.weight", &[32, 2], 8, 0)
        .data(68);
    let f = open_bytes("ok", &b.bytes()).unwrap();
    assert_eq!(f.tensor_infos()[0].size, 68);
    assert_eq!(f.get("a.b"), Some(&MetaValue::U32(5)));
    let mut v2 = Builder::new().tensor("x", &[4], 0, 0).data(16);
    v2.version = 2;
    assert!(open_bytes("v2", &v2.bytes()).is_ok());
}

#[test]
fn malformed_files_are_rejected_cleanly() {
    // Wrong magic.
    let e = open_bytes("magic", b"GGUX\x03\0\0\0").unwrap_err();
    assert!(matches!(e, Error::BadMagic { what: "GGUF" }), "{e}");
    assert_eq!(
        open_bytes("empty", b"").unwrap_err().kind(),
        ErrorKind::BadMagic
    );
    // Versions.
    for v in [1u32, 4, 0x0300_0000] {
        let mut b = Builder::new();
        b.version = v;
        match open_bytes("ver", &b.bytes()).unwrap_err() {
            Error::UnsupportedVersion { found, .. } => assert_eq!(found, v),
            e => panic!("version {v}: {e}"),
        }
    }
    let corrupt = |tag: &str, b: &[u8]| {
        let e = open_bytes(tag, b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{tag}: {e}");
    };
    // Absurd counts.
    let mut b = Builder::new().bytes();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // n_kv
    corrupt("nkv", &b);
    let mut b = Builder::new().bytes();
    b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes()); // n_tensors
    corrupt("ntensors", &b);
    // String length beyond the file.
    let mut kv = Vec::new();
    kv.extend_from_slice(&(u64::MAX - 3).to_le_bytes());
    corrupt("strlen", &Builder::new().kv_raw("k", 8, &kv).bytes());
    // Array count beyond the file.
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&(1u64 << 50).to_le_bytes());
    corrupt("arrlen", &Builder::new().kv_raw("k", 9, &arr).bytes());
    // Deeply nested arrays.
    let mut deep = Vec::new();
    for _ in 0..20 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    corrupt("deep", &Builder::new().kv_raw("k", 9, &deep[4..]).bytes());
    // Unknown value type, bad bool.
    corrupt("vtype", &Builder::new().kv_raw("k", 13, &[0; 8]).bytes());
    corrupt("bool", &Builder::new().kv_raw("k", 7, &[2]).bytes());
    // Tensor data outside the file / misaligned / overflowing dims / bad n_dims.
    corrupt(
        "oob",
        &Builder::new().tensor("x", &[32, 2], 0, 0).data(100).bytes(),
    );
    corrupt(
        "off",
        &Builder::new()
            .tensor("x", &[4], 0, 1 << 60)
            .data(64)
            .bytes(),
    );
    corrupt(
        "align",
        &Builder::new().tensor("x", &[4], 0, 4).data(64).bytes(),
    );
    corrupt(
        "dims",
        &Builder::new()
            .tensor("x", &[1 << 32, 1 << 32, 1 << 20], 0, 0)
            .bytes(),
    );
    corrupt(
        "ndims",
        &Builder::new()
            .tensor("x", &[1, 1, 1, 1, 1], 0, 0)
            .data(4)
            .bytes(),
    );
    corrupt(
        "rowblk",
        &Builder::new().tensor("x", &[33], 8, 0).data(68).bytes(),
    );
    corrupt(
        "dup",
        &Builder::new()
            .tensor("x", &[4], 0, 0)
            .tensor("x", &[4], 0, 0)
            .data(16)
            .bytes(),
    );
    // Bad alignment value.
    corrupt(
        "alignkv",
        &Builder::new().kv_u32("general.alignment", 3).bytes(),
    );
    // Unknown ggml type → UnsupportedQuant naming it.
    let e = open_bytes(
        "type",
        &Builder::new().tensor("x", &[4], 99, 0).data(16).bytes(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedQuant(m) if m.contains("99")),
        "{e}"
    );
}

#[test]
fn every_truncation_of_a_real_file_fails_without_panicking() {
    let bytes = std::fs::read(data("quant_types.gguf.bin")).unwrap();
    // Header + metadata + infos fill the first few KB; check every prefix there, then a stride.
    let mut n = 0;
    let mut len = 0;
    while len < bytes.len() {
        let r = open_bytes("trunc", &bytes[..len]);
        assert!(r.is_err(), "prefix of {len} bytes parsed");
        n += 1;
        len += if len < 4096 { 1 } else { 997 };
    }
    assert!(n > 4000);
    // Random byte flips never panic (errors or successes are both fine).
    let mut state = 0x1234_5678u64;
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (state >> 33) as usize % 4096.min(b.len());
            b[i] ^= (state >> 13) as u8 | 1;
        }
        if let Ok(f) = open_bytes("flip", &b) {
            for t in f.tensor_infos() {
                let _ = f.tensor_bytes(t);
            }
        }
    }
}

#[test]
fn ggml_type_names() {
    assert_eq!(ggml_type_name(3), "Q4_1");
    assert_eq!(ggml_type_name(39), "MXFP4");
    assert_eq!(ggml_type_name(1000), "unknown");
}

#[test]
fn unsupported_arch_is_reported() {
    let b = Builder::new()
        .kv_raw("general.architecture", 8, &{
            let mut v = 5u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"bloom");
            v
        })
        .bytes();
    let dir = tempfile::Builder::new()
        .prefix("qstream-gguf-arch-")
        .tempdir()
        .unwrap();
    let p = dir.path().join("bloom.gguf");
    std::fs::write(&p, b).unwrap();
    let e = GgufModel::open(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedArch, "{e}");
}

// ---------- the real SmolLM2 file ----------

fn smollm2() -> Option<GgufModel> {
    // skipped with a note when absent; a failure in CI or with QSTREAM_SMOLLM2_GGUF set
    let p = common::smollm2::gguf_path()?;
    Some(GgufModel::open(&p).unwrap())
}

#[test]
fn smollm2_config_and_tensors() {
    let t0 = std::time::Instant::now();
    let Some(m) = smollm2() else { return };
    eprintln!("opened SmolLM2 GGUF + tokenizer json in {:?}", t0.elapsed());
    let c = m.config();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layer, c.n_embd, c.n_ff), (30, 576, 1536));
    assert_eq!((c.n_head, c.n_head_kv, c.head_dim), (9, 3, 64));
    assert_eq!((c.n_vocab, c.n_ctx_train), (49152, 8192));
    let rope = c.rope.as_ref().unwrap();
    assert_eq!(
        (rope.theta, rope.dim, rope.style),
        (100000.0, 64, RopeStyle::Neox)
    );
    assert!(rope.scaling.is_none());
    assert!(c.tie_embeddings && !c.qkv_bias && !c.qk_norm);
    assert_eq!(c.norm_eps, 1e-5);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]); // eos is <|im_end|> already
    assert_eq!(c.pad_token_id, Some(2));
    assert!(!c.add_bos);
    assert_eq!(m.tensors().len(), 272);
    let q = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_k")
        .unwrap();
    assert_eq!(
        (q.shape.clone(), q.source_type.as_str()),
        (vec![192, 576], "Q4_1")
    );
    assert!(m
        .tokenizer()
        .chat_template
        .as_deref()
        .unwrap()
        .contains("<|im_start|>"));
    assert!(m
        .tokenizer()
        .special_tokens
        .contains(&("eos".into(), "<|im_end|>".into())));
    // Q4_1 keeps its bytes as q4/32.
    let n = m.load_native("blk.0.attn_q").unwrap().unwrap();
    assert_eq!(
        (n.qtype, n.block, n.bytes.len()),
        (QuantType::Q4, 32, 576 * 576 / 32 * 20)
    );
}

#[test]
fn smollm2_samples_match_gguf_py() {
    let Some(m) = smollm2() else { return };
    let samples: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("smollm2_samples.json")).unwrap()).unwrap();
    let bits = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
            .collect()
    };
    let mut checked = 0;
    for s in samples.as_array().unwrap() {
        let name = canon(s["name"].as_str().unwrap());
        let got = m.load_f32(name).unwrap();
        let first = bits(&s["first"]);
        let last = bits(&s["last"]);
        assert_bits_eq(name, &got[..first.len()], &first);
        assert_bits_eq(name, &got[got.len() - last.len()..], &last);
        checked += 1;
    }
    assert!(checked >= 3);
}
