//! HuggingFace folder importer against the fixtures in `tests/fixtures` (see its README):
//! every tiny architecture opens with the config its `config.json` states, tensor names and
//! shapes are canonical, float tensors load bit-exactly, quantized folders (fp8, awq, mxfp4,
//! bf16, fp16) decode to exactly what an independent numpy decode
//! (`tests/fixtures/hf_expected/make_expected.py`) computes, and broken folders fail cleanly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qstream_core::import::hf::HfModel;
use qstream_core::import::ModelSource;
use qstream_core::model::config::{Activation, Arch, RopeScaling, RopeStyle};
use qstream_core::quant::QuantType;
use qstream_core::ErrorKind;

const TINY: [&str; 20] = [
    "deepseek_v2",
    "deepseek_v3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gpt2",
    "gpt_oss",
    "gptj",
    "granite",
    "llama",
    "mistral",
    "mixtral",
    "olmo2",
    "phi",
    "phi3",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "starcoder2",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn tiny(name: &str) -> HfModel {
    HfModel::open(&fixtures().join("tiny").join(name))
        .unwrap_or_else(|e| panic!("open tiny/{name}: {e}"))
}

fn quantized(name: &str) -> HfModel {
    HfModel::open(&fixtures().join("quantized").join(name))
        .unwrap_or_else(|e| panic!("open quantized/{name}: {e}"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Name → (shape, f32 values when the dtype is F32, raw bytes).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>, Vec<u8>)>;

/// All tensors of a safetensors file decoded to f32 (float dtypes only) with their shapes.
fn read_safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let vals: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            _ => Vec::new(),
        };
        out.insert(name, (view.shape().to_vec(), vals, data.to_vec()));
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_tiny_fixture_opens_with_its_config() {
    for name in TINY {
        let dir = fixtures().join("tiny").join(name);
        let m = tiny(name);
        let c = m.config();
        let r = json(&dir.join("reference.json"));
        let h = &r["config_highlights"];
        let cfg = json(&dir.join("config.json"));
        let get = |k: &str| h.get(k).or_else(|| cfg.get(k)).and_then(|v| v.as_u64());
        if let Some(v) = get("num_hidden_layers").or(get("n_layer")) {
            assert_eq!(c.n_layer as u64, v, "{name} n_layer");
        }
        if let Some(v) = get("hidden_size").or(get("n_embd")) {
            assert_eq!(c.n_embd as u64, v, "{name} n_embd");
        }
        if let Some(v) = get("num_attention_heads").or(get("n_head")) {
            assert_eq!(c.n_head as u64, v, "{name} n_head");
        }
        if let Some(v) = get("num_key_value_heads") {
            assert_eq!(c.n_head_kv as u64, v, "{name} n_head_kv");
        }
        assert_eq!(c.n_vocab, 512, "{name}");
        assert_eq!(c.n_ctx_train, 256, "{name}");
        if let Some(t) = h.get("tie_word_embeddings").and_then(|v| v.as_bool()) {
            assert_eq!(c.tie_embeddings, t, "{name} tie");
        }
        assert_eq!(
            c.tie_embeddings,
            !m.tensors().iter().any(|t| t.name == "output"),
            "{name}"
        );
        assert_eq!(c.bos_token_id, Some(1), "{name}");
        assert_eq!(c.eos_token_ids, vec![2], "{name}");
        assert_eq!(c.pad_token_id, Some(0), "{name}");
        assert!(!c.add_bos, "{name}: fixtures add no BOS");
        let tok = m.tokenizer();
        assert_eq!(
            tok.tokenizer_json,
            std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(),
            "{name}: tokenizer.json passed through verbatim"
        );
        assert!(tok
            .chat_template
            .as_deref()
            .unwrap()
            .contains("<|im_start|>"));
        assert!(tok
            .special_tokens
            .contains(&("eos".to_string(), "<|im_end|>".to_string())));
        // every listed tensor loads with the listed shape
        for t in m.tensors() {
            let v = m
                .load_f32(&t.name)
                .unwrap_or_else(|e| panic!("{name} {}: {e}", t.name));
            assert_eq!(
                v.len(),
                t.shape.iter().product::<usize>(),
                "{name} {}",
                t.name
            );
            assert!(!t.name.contains(".weight"), "{name}: {}", t.name);
        }
        assert_eq!(c.arch, Arch::from_name(name).unwrap());
    }
}

#[test]
fn architecture_specific_config_values() {
    let l = tiny("llama");
    let c = l.config();
    assert_eq!((c.head_dim, c.n_ff, c.norm_eps), (16, 128, 1e-6));
    assert_eq!(c.act, Activation::Silu);
    let rope = c.rope.as_ref().unwrap();
    assert_eq!(
        (rope.theta, rope.dim, rope.style),
        (10000.0, 16, RopeStyle::Neox)
    );
    assert_eq!(
        rope.scaling,
        Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64
        })
    );
    assert!(!c.qkv_bias && !c.qk_norm && c.sliding_window.is_none() && c.moe.is_none());

    assert_eq!(tiny("mistral").config().sliding_window, Some(8));
    let q2 = tiny("qwen2");
    assert!(q2.config().qkv_bias);
    assert_eq!(q2.config().sliding_window, None, "use_sliding_window false");
    let q3 = tiny("qwen3");
    assert!(q3.config().qk_norm);
    assert_eq!(q3.config().head_dim, 32);

    let phi = tiny("phi");
    assert_eq!(phi.config().rope.as_ref().unwrap().dim, 8);
    assert_eq!(phi.config().act, Activation::GeluTanh);
    assert!(!phi.config().gated_mlp);
    let gptj = tiny("gptj");
    let r = gptj.config().rope.as_ref().unwrap();
    assert_eq!((r.dim, r.style), (8, RopeStyle::Interleaved));
    assert!(tiny("gpt2").config().rope.is_none());
    assert!(tiny("gpt2").config().tie_embeddings);

    let phi3 = tiny("phi3");
    match &phi3.config().rope.as_ref().unwrap().scaling {
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
        }) => {
            assert_eq!(short_factor.len(), 8);
            assert_eq!(long_factor[7], 5.5);
            assert_eq!(*original_max_position_embeddings, 64);
        }
        s => panic!("phi3 scaling {s:?}"),
    }

    let g2 = tiny("gemma2");
    assert_eq!(g2.config().act, Activation::GeluTanh);
    assert_eq!(g2.config().extra_f32("attn_logit_softcapping"), Some(50.0));
    assert_eq!(g2.config().extra_f32("final_logit_softcapping"), Some(30.0));
    assert_eq!(g2.config().extra_f32("query_pre_attn_scalar"), Some(16.0));
    let g3 = tiny("gemma3_text");
    let r = g3.config().rope.as_ref().unwrap();
    assert_eq!(r.theta, 1e6);
    assert_eq!(r.scaling, Some(RopeScaling::Linear { factor: 8.0 }));
    assert_eq!(g3.config().extra_f32("rope_local_base_freq"), Some(1e4));
    assert!(g3.config().extra["layer_types"].is_array());

    let gr = tiny("granite");
    assert_eq!(gr.config().extra_f32("embedding_multiplier"), Some(12.0));
    assert_eq!(gr.config().extra_f32("logits_scaling"), Some(8.0));

    let oss = tiny("gpt_oss");
    let moe = oss.config().moe.as_ref().unwrap();
    assert_eq!((moe.n_expert, moe.n_expert_used, moe.expert_ff), (4, 2, 64));
    assert!(matches!(
        oss.config().rope.as_ref().unwrap().scaling,
        Some(RopeScaling::Yarn { factor, original_max_position_embeddings: 64, truncate: Some(false), .. }) if factor == 4.0
    ));
    assert_eq!(oss.config().extra_f32("swiglu_limit"), Some(7.0));

    let q2m = tiny("qwen2_moe");
    let moe = q2m.config().moe.as_ref().unwrap();
    assert!(!moe.norm_topk_prob);
    assert_eq!((moe.n_shared_expert, moe.shared_expert_ff), (1, 128));
    assert!(
        tiny("qwen3_moe")
            .config()
            .moe
            .as_ref()
            .unwrap()
            .norm_topk_prob
    );
    assert!(
        tiny("mixtral")
            .config()
            .moe
            .as_ref()
            .unwrap()
            .norm_topk_prob
    );

    let d2 = tiny("deepseek_v2");
    let c = d2.config();
    assert_eq!(c.head_dim, 24);
    let r = c.rope.as_ref().unwrap();
    assert_eq!((r.dim, r.style), (8, RopeStyle::Interleaved));
    assert!(
        matches!(r.scaling, Some(RopeScaling::Yarn { mscale: Some(m), .. }) if (m - 0.707).abs() < 1e-6)
    );
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(
        (moe.n_expert, moe.n_shared_expert, moe.shared_expert_ff),
        (4, 1, 64)
    );
    assert_eq!(c.extra["kv_lora_rank"], 32);
    let d3 = tiny("deepseek_v3");
    assert_eq!(d3.config().extra_f32("routed_scaling_factor"), Some(2.5));

    let sc = tiny("starcoder2");
    assert!(sc.config().tie_embeddings && sc.config().qkv_bias);
    assert_eq!(sc.config().sliding_window, Some(8));
    assert_eq!(sc.config().norm_eps, 1e-5);
}

/// The complete canonical tensor list a dense llama-family model must have.
fn expected_dense(m: &HfModel, bias: bool, qk_norm: bool) -> Vec<(String, Vec<usize>)> {
    let c = m.config();
    let (e, q, kv, ff) = (
        c.n_embd,
        c.n_head * c.head_dim,
        c.n_head_kv * c.head_dim,
        c.n_ff,
    );
    let mut v = vec![
        ("token_embd".to_string(), vec![c.n_vocab, e]),
        ("output_norm".to_string(), vec![e]),
        ("output".to_string(), vec![c.n_vocab, e]),
    ];
    for i in 0..c.n_layer {
        let b = |n: &str| format!("blk.{i}.{n}");
        v.push((b("attn_norm"), vec![e]));
        v.push((b("attn_q"), vec![q, e]));
        v.push((b("attn_k"), vec![kv, e]));
        v.push((b("attn_v"), vec![kv, e]));
        v.push((b("attn_output"), vec![e, q]));
        v.push((b("ffn_norm"), vec![e]));
        v.push((b("ffn_gate"), vec![ff, e]));
        v.push((b("ffn_up"), vec![ff, e]));
        v.push((b("ffn_down"), vec![e, ff]));
        if bias {
            v.push((b("attn_q.bias"), vec![q]));
            v.push((b("attn_k.bias"), vec![kv]));
            v.push((b("attn_v.bias"), vec![kv]));
        }
        if qk_norm {
            v.push((b("attn_q_norm"), vec![c.head_dim]));
            v.push((b("attn_k_norm"), vec![c.head_dim]));
        }
    }
    v.sort();
    v
}

#[test]
fn dense_tensor_names_and_shapes() {
    for (name, bias, qk) in [
        ("llama", false, false),
        ("mistral", false, false),
        ("qwen2", true, false),
        ("qwen3", false, true),
    ] {
        let m = tiny(name);
        let mut got: Vec<(String, Vec<usize>)> = m
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        got.sort();
        assert_eq!(got, expected_dense(&m, bias, qk), "{name}");
        assert!(m.tensors().iter().all(|t| t.source_type == "F32"));
    }
    // stable order: token_embd first, output last
    let m = tiny("llama");
    assert_eq!(m.tensors()[0].name, "token_embd");
    assert_eq!(m.tensors().last().unwrap().name, "output_norm");
    let layer_order: Vec<usize> = m
        .tensors()
        .iter()
        .filter_map(|t| qstream_core::model::names::split_layer(&t.name).map(|x| x.0))
        .collect();
    assert!(layer_order.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn llama_f32_is_bit_exact() {
    let dir = fixtures().join("tiny/llama");
    let m = tiny("llama");
    let st = read_safetensors(&dir.join("model.safetensors"));
    let map = [
        ("token_embd", "model.embed_tokens.weight"),
        ("output", "lm_head.weight"),
        ("output_norm", "model.norm.weight"),
        ("blk.0.attn_q", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.1.attn_k", "model.layers.1.self_attn.k_proj.weight"),
        (
            "blk.1.attn_output",
            "model.layers.1.self_attn.o_proj.weight",
        ),
        ("blk.0.ffn_down", "model.layers.0.mlp.down_proj.weight"),
        (
            "blk.1.ffn_norm",
            "model.layers.1.post_attention_layernorm.weight",
        ),
    ];
    for (canon, hf) in map {
        let (shape, vals, raw) = &st[hf];
        let got = m.load_f32(canon).unwrap();
        assert_eq!(bits(&got), bits(vals), "{canon}");
        let t = m.tensors().iter().find(|t| t.name == canon).unwrap();
        assert_eq!(&t.shape, shape);
        let n = m.load_native(canon).unwrap().unwrap();
        assert_eq!((n.qtype, n.block), (QuantType::F32, 1));
        assert_eq!(&n.bytes, raw, "{canon} native bytes");
    }
    assert_eq!(st.len(), m.tensors().len());
}

fn expected() -> Tensors {
    read_safetensors(&fixtures().join("hf_expected/expected.safetensors"))
}

fn check_against_numpy(fixture: &str, m: &HfModel) -> usize {
    let exp = expected();
    let mut n = 0;
    for (k, (shape, vals, _)) in &exp {
        let Some(canon) = k.strip_prefix(&format!("{fixture}/")) else {
            continue;
        };
        let got = m.load_f32(canon).unwrap();
        let t = m.tensors().iter().find(|t| t.name == canon).unwrap();
        assert_eq!(&t.shape, shape, "{k}");
        assert_eq!(bits(&got), bits(vals), "{k} differs from the numpy decode");
        n += 1;
    }
    n
}

#[test]
fn fp8_decodes_exactly() {
    let m = quantized("fp8");
    assert_eq!(check_against_numpy("fp8", &m), 3);
    let t = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_q")
        .unwrap();
    assert_eq!(t.source_type, "fp8");
    assert!(m.load_native("blk.0.attn_q").unwrap().is_none());
    // bf16 tensors stay native
    let n = m.load_native("token_embd").unwrap().unwrap();
    assert_eq!(n.qtype, QuantType::Bf16);
    // quantization only moved the weights a little from tiny/llama
    let orig = tiny("llama").load_f32("blk.1.ffn_down").unwrap();
    let q = m.load_f32("blk.1.ffn_down").unwrap();
    let err: f32 = orig.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f32>() / orig.len() as f32;
    let mag: f32 = orig.iter().map(|a| a.abs()).sum::<f32>() / orig.len() as f32;
    assert!(err < 0.1 * mag, "fp8 err {err} vs magnitude {mag}");
}

#[test]
fn awq_decodes_exactly() {
    let m = quantized("awq");
    assert_eq!(check_against_numpy("awq", &m), 3);
    let t = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.1.ffn_down")
        .unwrap();
    assert_eq!(
        (t.shape.clone(), t.source_type.as_str()),
        (vec![64, 128], "awq4")
    );
    assert!(m.load_native("blk.0.attn_k").unwrap().is_none());
    let orig = tiny("llama").load_f32("blk.0.attn_k").unwrap();
    let q = m.load_f32("blk.0.attn_k").unwrap();
    let err: f32 = orig.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f32>() / orig.len() as f32;
    let mag: f32 = orig.iter().map(|a| a.abs()).sum::<f32>() / orig.len() as f32;
    assert!(err < 0.2 * mag, "awq err {err} vs magnitude {mag}");
    // f16 tensors stay native
    assert_eq!(
        m.load_native("output").unwrap().unwrap().qtype,
        QuantType::F16
    );
}

#[test]
fn mxfp4_decodes_exactly_and_repacks_natively() {
    let m = quantized("mxfp4");
    assert_eq!(check_against_numpy("mxfp4", &m), 6);
    const FP4: [f32; 16] = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    for name in [
        "blk.0.ffn_gate_exps",
        "blk.0.ffn_up_exps",
        "blk.1.ffn_down_exps",
    ] {
        let f = m.load_f32(name).unwrap();
        let n = m.load_native(name).unwrap().unwrap();
        assert_eq!((n.qtype, n.block), (QuantType::Mxfp4, 32));
        assert_eq!(n.bytes.len(), f.len() / 32 * 17);
        // QSF layout: e, then 16 bytes with element j low nibble, j+16 high nibble
        for (b, blk) in n.bytes.chunks_exact(17).enumerate() {
            let s = (2f32).powi(blk[0] as i32 - 127);
            for j in 0..16 {
                let lo = FP4[(blk[1 + j] & 0xF) as usize] * s;
                let hi = FP4[(blk[1 + j] >> 4) as usize] * s;
                assert_eq!(
                    lo.to_bits(),
                    f[b * 32 + j].to_bits(),
                    "{name} block {b} elem {j}"
                );
                assert_eq!(hi.to_bits(), f[b * 32 + j + 16].to_bits());
            }
        }
    }
    let t = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.ffn_down_exps")
        .unwrap();
    assert_eq!(t.shape, vec![4 * 64, 64]);
    // expert biases split like the weights: gate = even, up = odd entries
    let gu = m.load_f32("blk.0.ffn_gate_exps.bias").unwrap();
    let up = m.load_f32("blk.0.ffn_up_exps.bias").unwrap();
    assert_eq!((gu.len(), up.len()), (4 * 64, 4 * 64));
}

#[test]
fn bf16_and_fp16_exact() {
    for fx in ["bf16", "fp16"] {
        let m = quantized(fx);
        assert_eq!(check_against_numpy(fx, &m), 3);
        let want = if fx == "bf16" {
            QuantType::Bf16
        } else {
            QuantType::F16
        };
        let raw = read_safetensors(
            &fixtures()
                .join("quantized")
                .join(fx)
                .join("model.safetensors"),
        );
        let n = m.load_native("blk.0.attn_q").unwrap().unwrap();
        assert_eq!(n.qtype, want);
        assert_eq!(n.bytes, raw["model.layers.0.self_attn.q_proj.weight"].2);
    }
}

#[test]
fn moe_experts_are_stacked() {
    let dir = fixtures().join("tiny/mixtral");
    let st = read_safetensors(&dir.join("model.safetensors"));
    let m = tiny("mixtral");
    let gate = m.load_f32("blk.1.ffn_gate_exps").unwrap();
    let up = m.load_f32("blk.1.ffn_up_exps").unwrap();
    let down = m.load_f32("blk.1.ffn_down_exps").unwrap();
    let mut g = Vec::new();
    let mut u = Vec::new();
    let mut d = Vec::new();
    for e in 0..4 {
        let p = format!("model.layers.1.block_sparse_moe.experts.{e}");
        g.extend_from_slice(&st[&format!("{p}.w1.weight")].1);
        u.extend_from_slice(&st[&format!("{p}.w3.weight")].1);
        d.extend_from_slice(&st[&format!("{p}.w2.weight")].1);
    }
    assert_eq!(bits(&gate), bits(&g));
    assert_eq!(bits(&up), bits(&u));
    assert_eq!(bits(&down), bits(&d));
    assert_eq!(
        m.load_native("blk.1.ffn_gate_exps")
            .unwrap()
            .unwrap()
            .bytes
            .len(),
        4 * 64 * 64 * 4
    );
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"blk.0.ffn_gate_inp"));

    let q = tiny("qwen2_moe");
    let names: Vec<&str> = q.tensors().iter().map(|t| t.name.as_str()).collect();
    for n in [
        "blk.0.ffn_gate_inp",
        "blk.0.ffn_gate_exps",
        "blk.0.ffn_gate_shexp",
        "blk.0.ffn_up_shexp",
        "blk.0.ffn_down_shexp",
        "blk.0.ffn_gate_inp_shexp",
    ] {
        assert!(names.contains(&n), "qwen2_moe lacks {n}: {names:?}");
    }
    let d3 = tiny("deepseek_v3");
    let names: Vec<&str> = d3.tensors().iter().map(|t| t.name.as_str()).collect();
    for n in [
        "blk.0.ffn_gate",
        "blk.1.ffn_gate_exps",
        "blk.1.exp_probs_b",
        "blk.0.attn_q_a",
        "blk.0.attn_q_a_norm",
        "blk.0.attn_q_b",
        "blk.0.attn_kv_a_mqa",
        "blk.0.attn_kv_a_norm",
        "blk.0.attn_kv_b",
    ] {
        assert!(names.contains(&n), "deepseek_v3 lacks {n}");
    }

    // gpt-oss float experts: [E, in, out] → gate = even output columns, transposed.
    let dir = fixtures().join("tiny/gpt_oss");
    let st = read_safetensors(&dir.join("model.safetensors"));
    let m = tiny("gpt_oss");
    let (_, gu, _) = &st["model.layers.0.mlp.experts.gate_up_proj"]; // [4, 64, 128]
    let gate = m.load_f32("blk.0.ffn_gate_exps").unwrap(); // [4*64, 64]
    let up = m.load_f32("blk.0.ffn_up_exps").unwrap();
    for e in 0..4 {
        for o in 0..64 {
            for i in 0..64 {
                let src = |col: usize| gu[e * 64 * 128 + i * 128 + col];
                assert_eq!(gate[(e * 64 + o) * 64 + i], src(2 * o));
                assert_eq!(up[(e * 64 + o) * 64 + i], src(2 * o + 1));
            }
        }
    }
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"blk.0.attn_sinks") && names.contains(&"blk.0.ffn_gate_inp.bias"));
    // and the mxfp4 checkpoint decodes close to these float weights
    let mx = quantized("mxfp4").load_f32("blk.0.ffn_gate_exps").unwrap();
    let err: f32 = mx
        .iter()
        .zip(&gate)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / mx.len() as f32;
    let mag: f32 = gate.iter().map(|a| a.abs()).sum::<f32>() / gate.len() as f32;
    assert!(err < 0.25 * mag, "mxfp4 vs f32 gpt_oss: {err} vs {mag}");
}

#[test]
fn fused_and_conv1d_tensors() {
    // phi3: gate_up_proj split in halves, qkv stays fused.
    let dir = fixtures().join("tiny/phi3");
    let st = read_safetensors(&dir.join("model.safetensors"));
    let m = tiny("phi3");
    let (_, gu, _) = &st["model.layers.0.mlp.gate_up_proj.weight"]; // [256, 64]
    assert_eq!(
        bits(&m.load_f32("blk.0.ffn_gate").unwrap()),
        bits(&gu[..128 * 64])
    );
    assert_eq!(
        bits(&m.load_f32("blk.0.ffn_up").unwrap()),
        bits(&gu[128 * 64..])
    );
    let qkv = m
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_qkv")
        .unwrap();
    assert_eq!(qkv.shape, vec![128, 64]);

    // gpt2: Conv1D [in, out] transposed to [out, in].
    let dir = fixtures().join("tiny/gpt2");
    let st = read_safetensors(&dir.join("model.safetensors"));
    let m = tiny("gpt2");
    let (_, w, _) = &st["transformer.h.0.mlp.c_fc.weight"]; // [64, 128]
    let t = m.load_f32("blk.0.ffn_up").unwrap(); // [128, 64]
    for o in 0..128 {
        for i in 0..64 {
            assert_eq!(t[o * 64 + i], w[i * 128 + o]);
        }
    }
    let shape = |n: &str| {
        m.tensors()
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(shape("blk.0.attn_qkv"), vec![192, 64]);
    assert_eq!(shape("blk.1.ffn_down"), vec![64, 128]);
    assert_eq!(shape("pos_embd"), vec![256, 64]);
    assert!(
        m.load_native("blk.0.ffn_up").unwrap().is_none(),
        "transposed: not native"
    );
    assert!(m.load_native("blk.0.attn_qkv.bias").unwrap().is_some());

    // gemma2 norms
    let g = tiny("gemma2");
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    for n in [
        "blk.0.attn_norm",
        "blk.0.post_attention_norm",
        "blk.0.ffn_norm",
        "blk.0.post_ffw_norm",
    ] {
        assert!(names.contains(&n), "gemma2 lacks {n}");
    }
}

// ---------------------------------------------------------------- broken folders

/// A scratch copy of a model folder, removed on drop.
struct Folder(tempfile::TempDir);

impl Folder {
    fn new(tag: &str) -> Folder {
        Folder(
            tempfile::Builder::new()
                .prefix(&format!("qstream-hf-{tag}-"))
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A copy of tiny/llama.
    fn llama(tag: &str) -> Folder {
        let d = Folder::new(tag);
        for f in std::fs::read_dir(fixtures().join("tiny/llama")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.path().join(f.file_name())).unwrap();
        }
        d
    }

    fn edit_config(&self, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
        let p = self.path().join("config.json");
        let mut v = json(&p);
        f(v.as_object_mut().unwrap());
        std::fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
    }
}

fn open_err(d: &Folder) -> qstream_core::Error {
    HfModel::open(d.path()).expect_err("broken folder must not open")
}

#[test]
fn broken_folders_fail_cleanly() {
    // sanity: an unmodified copy opens
    HfModel::open(Folder::llama("ok").path()).unwrap();

    let d = Folder::llama("noconfig");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::NotFound);

    let d = Folder::llama("noweights");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::NotFound);

    let d = Folder::llama("notokenizer");
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::NotFound);

    let d = Folder::llama("truncated");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::Corrupt);

    let d = Folder::llama("tiny-file");
    std::fs::write(d.path().join("model.safetensors"), b"abc").unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::Corrupt);

    // header lies: a tensor's end offset grows beyond the data
    let d = Folder::llama("header-lies");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = header["model.norm.weight"].as_object_mut().unwrap();
    t.insert("shape".into(), serde_json::json!([640]));
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, out).unwrap();
    assert_eq!(open_err(&d).kind(), ErrorKind::Corrupt);

    // tensor shape disagrees with config
    let d = Folder::llama("wrong-shape");
    d.edit_config(|c| {
        c.insert("intermediate_size".into(), 256.into());
    });
    let e = open_err(&d);
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("ffn_"), "{e}");

    // config claims fewer layers than the file has
    let d = Folder::llama("layers");
    d.edit_config(|c| {
        c.insert("num_hidden_layers".into(), 1.into());
    });
    assert_eq!(open_err(&d).kind(), ErrorKind::Corrupt);

    let d = Folder::llama("unknown-arch");
    d.edit_config(|c| {
        c.insert("model_type".into(), "frobnicator".into());
    });
    let e = open_err(&d);
    assert_eq!(e.kind(), ErrorKind::UnsupportedArch);
    assert!(e.to_string().contains("frobnicator"));

    let d = Folder::llama("missing-field");
    d.edit_config(|c| {
        c.remove("hidden_size");
    });
    let e = open_err(&d);
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("hidden_size"), "{e}");

    let d = Folder::llama("bad-field");
    d.edit_config(|c| {
        c.insert("num_attention_heads".into(), "four".into());
    });
    let e = open_err(&d);
    assert!(e.to_string().contains("num_attention_heads"), "{e}");

    let d = Folder::llama("bad-json");
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    let e = open_err(&d);
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("config.json"), "{e}");

    // unknown tensors are kept under a sanitized name, not rejected
    let d = Folder::llama("unknown-tensor");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let end = header
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.get("data_offsets"))
        .map(|o| o[1].as_u64().unwrap())
        .max()
        .unwrap();
    header.as_object_mut().unwrap().insert(
        "model.layers.0.mystery module.weight".into(),
        serde_json::json!({"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}),
    );
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out.extend_from_slice(&1.5f32.to_le_bytes());
    out.extend_from_slice(&(-2.0f32).to_le_bytes());
    std::fs::write(&p, out).unwrap();
    let m = HfModel::open(d.path()).unwrap();
    assert_eq!(m.load_f32("blk.0.mystery_module").unwrap(), vec![1.5, -2.0]);
    assert!(m.load_f32("no.such.tensor").is_err());
}

#[test]
fn sharded_folder_opens() {
    // Split tiny/llama into two shards with an index.
    let src = fixtures().join("tiny/llama");
    let d = Folder::llama("sharded");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (k, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &d.path().join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let m = HfModel::open(d.path()).unwrap();
    let one = tiny("llama");
    assert_eq!(m.tensors().len(), one.tensors().len());
    for t in one.tensors() {
        assert_eq!(
            bits(&m.load_f32(&t.name).unwrap()),
            bits(&one.load_f32(&t.name).unwrap())
        );
    }
}
