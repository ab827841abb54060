//! One file per family: how the shared blocks compose ([`super::FamilySpec`]), read from the
//! [`super::ModelConfig`] (and its `extra` keys, which keep config.json's names). No family
//! has its own forward pass; the registry is [`super::spec`].

pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod gptj;
pub mod granite;
pub mod llama;
pub mod olmo2;
pub mod phi;
pub mod phi3;
pub mod starcoder2;
