//! Weight files: name/shape checks with readable errors, truncated files, dtype conversion.

use std::path::PathBuf;

use ti_xla::io::weights::{component_files, WeightFiles, WeightSpec};
use xla_graphs::DType;

fn text_encoder_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-sd1/text_encoder/model.safetensors")
}

fn specs_of(files: &WeightFiles) -> Vec<WeightSpec> {
    files
        .names()
        .filter(|n| !n.ends_with("position_ids"))
        .map(|n| WeightSpec {
            name: n.to_string(),
            shape: files.shape(n).unwrap().to_vec(),
        })
        .collect()
}

#[test]
fn matching_specs_pass_and_each_mismatch_is_named() {
    let files = WeightFiles::open(&[text_encoder_file()]).unwrap();
    let specs = specs_of(&files);
    files.check(&specs, "text_encoder").unwrap();

    let mut missing = specs.clone();
    missing.push(WeightSpec {
        name: "text_model.extra.weight".into(),
        shape: vec![3],
    });
    let err = files
        .check(&missing, "text_encoder")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 missing: text_model.extra.weight"), "{err}");

    let mut misshaped = specs.clone();
    let target = misshaped
        .iter_mut()
        .find(|s| s.name == "text_model.final_layer_norm.weight")
        .unwrap();
    target.shape = vec![17];
    let err = files
        .check(&misshaped, "text_encoder")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text_model.final_layer_norm.weight (expected [17], found [16])"),
        "{err}"
    );

    let fewer: Vec<_> = specs
        .iter()
        .filter(|s| !s.name.contains("layers.1."))
        .cloned()
        .collect();
    let err = files.check(&fewer, "text_encoder").unwrap_err().to_string();
    assert!(
        err.contains("unexpected: text_model.encoder.layers.1.") && err.contains("more"),
        "{err}"
    );
}

#[test]
fn f16_weights_convert_exactly_to_f32_and_bf16_rounds() {
    let files = WeightFiles::open(&[text_encoder_file()]).unwrap();
    let name = "text_model.final_layer_norm.weight";
    let f32s: Vec<f32> = files
        .read_as(name, DType::F32)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let f16s: Vec<half::f16> = files
        .read_as(name, DType::F16)
        .unwrap()
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(f32s.len(), 16);
    // f16 -> f32 is exact, so converting back must give the stored values bit for bit.
    for (a, b) in f32s.iter().zip(&f16s) {
        assert_eq!(half::f16::from_f32(*a), *b);
        assert!(
            (a - 1.0).abs() < 1.0,
            "norm scales are drawn around 1, got {a}"
        );
    }
    let bf: Vec<half::bf16> = files
        .read_as(name, DType::BF16)
        .unwrap()
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
        .collect();
    for (a, b) in f32s.iter().zip(&bf) {
        assert!(
            ((b.to_f32() - a) / a).abs() <= 1.0 / 256.0,
            "bf16 rounding of {a} gave {b}"
        );
    }
    assert!(files.read_as(name, DType::I32).is_err());
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("ti-xla-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(text_encoder_file()).unwrap();
    let cut = dir.join("model.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = WeightFiles::open(&[cut]).err().unwrap().to_string();
    assert!(
        err.contains("not a valid safetensors file") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn component_files_explain_variants() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1/text_encoder");
    assert_eq!(
        component_files(&dir, "model", None).unwrap(),
        vec![dir.join("model.safetensors")]
    );
    let err = component_files(&dir, "model", Some("fp16"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.fp16.safetensors") && err.contains("drop --variant"),
        "{err}"
    );
}

/// A VAE saved with diffusers' pre-0.14 attention names (`query`, `key`, `value`,
/// `proj_attn`, as in the 2022 SD uploads) reads as today's checkpoint: the same names, shapes
/// and values, so it passes the model's check.
#[test]
fn deprecated_vae_attention_names_read_as_todays() {
    let vae = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&vae).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let old_name = |n: &str| {
        n.replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.")
    };
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (old_name(&n), v))
        .collect();
    let renamed = tensors
        .iter()
        .filter(|(n, _)| n.contains(".query.") || n.contains(".proj_attn."))
        .count();
    assert!(renamed >= 4, "the fixture VAE has mid-block attention");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weights-deprecated");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("old.safetensors");
    safetensors::serialize_to_file(tensors, None, &old).unwrap();

    let today = WeightFiles::open(&[vae]).unwrap();
    let legacy = WeightFiles::open(&[old]).unwrap();
    assert_eq!(
        today.names().collect::<Vec<_>>(),
        legacy.names().collect::<Vec<_>>()
    );
    legacy.check(&specs_of(&today), "vae").unwrap();
    for name in today.names() {
        assert_eq!(
            today.read_as(name, DType::F32).unwrap(),
            legacy.read_as(name, DType::F32).unwrap(),
            "{name}"
        );
    }
}
