//! The SDXL components and one SDXL Textual Inversion step against diffusers / transformers on
//! the tiny SDXL-style fixture (tests/fixtures/tiny-sdxl, references computed in f64 by
//! scripts/make_sdxl_fixtures.py): both text encoders (penultimate states, the pooled and
//! projected `text_embeds` under both of transformers' pooling rules), the UNet with text-time
//! conditioning and per-block transformer depths, the VAE, and the step's loss, gradients and
//! AdamW update for both tables' rows, all through `ti-xla forward` in f32.

mod parity;

use std::collections::HashMap;
use std::path::Path;

use parity::{compare, copy_model, fixture, forward, scratch};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Max |ours - reference| / max |reference| for outputs and activations (f32 against f64).
const TOLERANCE: f64 = 1e-4;
/// Max relative error of the learned rows after the AdamW step.
const ROWS_TOLERANCE: f64 = 1e-5;
const MODEL: &str = "tiny-sdxl";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("no tensor {name}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs `forward --component component` on the reference file (which holds the inputs) and
/// checks every `(ours, reference)` pair of output names; returns the relative errors.
fn check(component: &str, reference: &str, pairs: &[(&str, &str)], extra: &[&str]) -> Vec<f64> {
    let inputs = fixture(MODEL).join("reference").join(reference);
    check_with(component, MODEL.as_ref(), &inputs, pairs, extra)
}

fn check_with(
    component: &str,
    model: &Path,
    inputs: &Path,
    pairs: &[(&str, &str)],
    extra: &[&str],
) -> Vec<f64> {
    let output = scratch(&format!("{component}-{}.safetensors", pairs[0].0));
    let run = forward(component, model.to_str().unwrap(), inputs, &output, extra);
    assert!(
        run.status.success(),
        "{component}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (ours, want) = (read(&output), read(inputs));
    let (ours, want) = (
        SafeTensors::deserialize(&ours).unwrap(),
        SafeTensors::deserialize(&want).unwrap(),
    );
    let mut errors = Vec::new();
    for (name, reference) in pairs {
        let (_, rel) = compare(
            &format!("{component} {name}"),
            &floats(&ours, name),
            &floats(&want, reference),
        );
        errors.push(rel);
    }
    errors
}

fn assert_within(errors: &[f64], pairs: &[(&str, &str)], tolerance: f64) {
    for (e, (name, _)) in errors.iter().zip(pairs) {
        assert!(
            *e <= tolerance,
            "{name}: relative error {e:e} > {tolerance:e}"
        );
    }
}

#[test]
fn text_encoder_matches_transformers() {
    let pairs = [
        ("last_hidden_state", "last_hidden_state"),
        ("penultimate_hidden_state", "penultimate_hidden_state"),
        ("debug.embeddings", "debug.embeddings"),
        ("debug.encoder.layers.0", "debug.encoder.layers.0"),
    ];
    let errors = check(
        "text_encoder",
        "text_encoder.safetensors",
        &pairs,
        &["--debug"],
    );
    assert_within(&errors, &pairs, TOLERANCE);
}

#[test]
fn text_encoder_2_matches_transformers_with_its_projection() {
    let pairs = [
        ("last_hidden_state", "last_hidden_state"),
        ("penultimate_hidden_state", "penultimate_hidden_state"),
        ("text_embeds", "text_embeds"),
    ];
    let errors = check("text_encoder_2", "text_encoder_2.safetensors", &pairs, &[]);
    assert_within(&errors, &pairs, TOLERANCE);
}

/// A copy of the fixture whose text_encoder_2 config has `eos_token_id` (the first-eos rule).
fn model_with_eos(eos: i64) -> std::path::PathBuf {
    let root = scratch("eos-model");
    let _ = std::fs::remove_dir_all(&root);
    copy_model(&fixture(MODEL), &root);
    let config = root.join("text_encoder_2/config.json");
    let mut json: serde_json::Value = serde_json::from_slice(&read(&config)).unwrap();
    json["eos_token_id"] = serde_json::json!(eos);
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    root
}

#[test]
fn text_encoder_2_pools_at_the_first_eos_when_the_config_says_so() {
    let reference = fixture(MODEL).join("reference/text_encoder_2.safetensors");
    let bytes = read(&reference);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let eos: i64 = meta.metadata().as_ref().unwrap()["eos_token_id"]
        .parse()
        .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // The inputs file: the hand-made ids under the name the forward command reads, and the
    // reference pooled output.
    let ids = st.tensor("input_ids_eos").unwrap();
    let embeds = st.tensor("text_embeds_eos").unwrap();
    let views: HashMap<String, TensorView> = [
        ("input_ids".to_string(), ids),
        ("text_embeds_eos".to_string(), embeds),
    ]
    .into();
    let inputs = scratch("eos-inputs.safetensors");
    std::fs::write(&inputs, safetensors::serialize(views, None).unwrap()).unwrap();
    let model = model_with_eos(eos);
    let pairs = [("text_embeds", "text_embeds_eos")];
    let errors = check_with("text_encoder_2", &model, &inputs, &pairs, &[]);
    assert_within(&errors, &pairs, TOLERANCE);
    // The legacy rule on the same ids would pool elsewhere: the two references differ.
    let legacy = check_with("text_encoder_2", &fixture(MODEL), &inputs, &pairs, &[]);
    assert!(
        legacy[0] > 100.0 * TOLERANCE,
        "the hand-made ids do not tell the rules apart ({:e})",
        legacy[0]
    );
}

#[test]
fn unet_with_text_time_conditioning_matches_diffusers() {
    let mut pairs = vec![("sample", "out_sample")];
    let taps = [
        "debug.time_proj",
        "debug.time_embedding",
        "debug.add_embedding",
        "debug.conv_in",
        "debug.down_blocks.0",
        "debug.down_blocks.1",
        "debug.down_blocks.2",
        "debug.mid_block",
        "debug.up_blocks.0",
        "debug.up_blocks.1",
        "debug.up_blocks.2",
    ];
    pairs.extend(taps.iter().map(|t| (*t, *t)));
    let errors = check("unet", "unet.safetensors", &pairs, &["--debug"]);
    assert_within(&errors, &pairs, TOLERANCE);
}

#[test]
fn vae_matches_diffusers() {
    let pairs = [("mean", "mean"), ("logvar", "logvar")];
    let errors = check("vae_encoder", "vae_encoder.safetensors", &pairs, &[]);
    assert_within(&errors, &pairs, TOLERANCE);
    let pairs = [("sample", "out_sample")];
    let errors = check("vae_decoder", "vae_decoder.safetensors", &pairs, &[]);
    assert_within(&errors, &pairs, TOLERANCE);
}

#[test]
fn one_sdxl_textual_inversion_step_matches_diffusers() {
    let reference = fixture(MODEL).join("reference/train_step.safetensors");
    let bytes = read(&reference);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let flag = |k: &str| meta[k].clone();
    let extra = [
        "--learning-rate".to_string(),
        flag("learning_rate"),
        "--adam-beta1".to_string(),
        flag("adam_beta1"),
        "--adam-beta2".to_string(),
        flag("adam_beta2"),
        "--adam-weight-decay".to_string(),
        flag("adam_weight_decay"),
        "--adam-epsilon".to_string(),
        flag("adam_epsilon"),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let pairs = [
        ("loss", "loss"),
        ("grad_rows", "grad_rows"),
        ("grad_rows_2", "grad_rows_2"),
    ];
    let errors = check("train_step", "train_step.safetensors", &pairs, &extra);
    assert_within(&errors, &pairs, TOLERANCE);
    let pairs = [("rows", "rows_after"), ("rows_2", "rows_2_after")];
    let errors = check("train_step", "train_step.safetensors", &pairs, &extra);
    assert_within(&errors, &pairs, ROWS_TOLERANCE);
}
