//! The traced AutoencoderKL against diffusers' outputs for both fixtures (references computed
//! in f64 from the stored f16 weights, see tests/fixtures/README.md), in f32 through the CPU
//! plugin: the encoder's latent mean and log-variance, the decoder's image, and the tapped
//! activations between; then `ti-xla forward --component vae_decoder` end to end.

mod parity;

use parity::{compare, fixture, scratch};
use std::process::Command;

use ti_xla::io::tensor_file::TensorFile;
use ti_xla::io::weights::{component_files, WeightFiles};
use ti_xla::model::folder::ModelFolder;
use ti_xla::pjrt::CompileOptions;
use ti_xla::runtime::device_weights::DeviceWeights;
use xla_graphs::models::params::Params;
use xla_graphs::models::vae::AutoencoderKL;
use xla_graphs::{DType, Graph, Shape, Tensor};

/// Max |ours - reference| / max |reference| allowed (issue 4).
const TOLERANCE: f64 = 1e-4;

fn reference(model: &str, component: &str) -> TensorFile {
    TensorFile::open(
        &fixture(model)
            .join("reference")
            .join(format!("{component}.safetensors")),
    )
    .unwrap()
}

fn ref_floats(file: &TensorFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    file.floats(name, &[None, None, None, None], "a reference tensor")
        .unwrap()
}

/// Traces one half of the VAE on the reference input `input` (f32), runs it on the CPU plugin
/// with every tap recorded, and returns each output as (name, shape, values).
fn run_vae(
    model: &str,
    component: &str,
    input: &str,
    trace: impl FnOnce(&AutoencoderKL, &Params, &Tensor) -> Vec<(String, Tensor)>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let folder = ModelFolder::open(fixture(model).to_str().unwrap(), None, None).unwrap();
    let (shape, values) = ref_floats(&reference(model, component), input);
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let vae = AutoencoderKL::new(folder.vae.clone()).unwrap();

    let g = Graph::new();
    let p = Params::new(&g, DType::F32);
    p.record_taps();
    let x = p.input(input, Shape::new(DType::F32, &dims)).unwrap();
    let mut outputs = trace(&vae, &p, &x);
    outputs.extend(p.taps());
    let program = g
        .to_stablehlo(&outputs.iter().map(|(_, t)| t).collect::<Vec<_>>())
        .unwrap();

    let client = ti_xla::testing::cpu_client(1).unwrap();
    let exe = client
        .compile(&program, &CompileOptions::replicated(1))
        .unwrap();
    let files = WeightFiles::open(
        &component_files(&folder.component("vae"), "diffusion_pytorch_model", None).unwrap(),
    )
    .unwrap();
    let all = vae.weight_specs(DType::F32).unwrap();
    let weights = DeviceWeights::upload_part(&client, &files, &p.specs(), &all, 1, "vae").unwrap();
    let buffer = client.buffer_from_host(&values, &dims, 0).unwrap();
    let args = weights.arguments(&[vec![&buffer]]).unwrap();
    let results = exe.execute(&args).unwrap().pop().unwrap();
    outputs
        .iter()
        .zip(results)
        .map(|((name, _), b)| {
            let shape = b.dims().iter().map(|&d| d as usize).collect();
            (name.clone(), shape, b.to_vec::<f32>().unwrap())
        })
        .collect()
}

/// Compares every output against the reference tensor `ref_name(output)`; all must exist.
fn check(model: &str, component: &str, ours: &[(String, Vec<usize>, Vec<f32>)]) {
    let refs = reference(model, component);
    for (name, shape, values) in ours {
        let ref_name = match name.as_str() {
            "mean" | "logvar" => name.clone(),
            "sample" => "out_sample".to_string(),
            tapped => format!("debug.{tapped}"),
        };
        let (ref_shape, expected) = ref_floats(&refs, &ref_name);
        assert_eq!(shape, &ref_shape, "{model} {ref_name}: shape");
        let (_, rel) = compare(&format!("{model} {ref_name}"), values, &expected);
        assert!(rel <= TOLERANCE, "{model} {ref_name}: rel error {rel:.3e}");
    }
}

fn check_encoder(model: &str) {
    let ours = run_vae(model, "vae_encoder", "pixel_values", |vae, p, x| {
        let (mean, logvar) = vae.encode(p, x).unwrap();
        vec![("mean".into(), mean), ("logvar".into(), logvar)]
    });
    let names: Vec<&str> = ours.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["mean", "logvar"]);
    assert_eq!(names[names.len() - 2..], ["encoder.mid_block", "encoder"]);
    // Deeper down blocks have no reference tensor.
    let ours: Vec<_> = ours
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("encoder.down_blocks.") || n.ends_with(".0"))
        .collect();
    assert_eq!(ours.len(), 5);
    check(model, "vae_encoder", &ours);
}

fn check_decoder(model: &str) {
    let ours = run_vae(model, "vae_decoder", "latents", |vae, p, x| {
        vec![("sample".into(), vae.decode(p, x).unwrap())]
    });
    let ours: Vec<_> = ours
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("decoder.up_blocks.") || n.ends_with(".0"))
        .collect();
    assert_eq!(ours.len(), 4);
    check(model, "vae_decoder", &ours);
}

#[test]
fn tiny_sd1_vae_encoder_matches_diffusers() {
    check_encoder("tiny-sd1");
}

#[test]
fn tiny_sd2_vae_encoder_matches_diffusers() {
    check_encoder("tiny-sd2");
}

#[test]
fn tiny_sd1_vae_decoder_matches_diffusers() {
    check_decoder("tiny-sd1");
}

#[test]
fn tiny_sd2_vae_decoder_matches_diffusers() {
    check_decoder("tiny-sd2");
}

#[test]
fn forward_command_decodes_latents() {
    let model = "tiny-sd2";
    let out = scratch("tiny-sd2-vae_decoder.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "forward",
            "--component",
            "vae_decoder",
            "--no-compile-cache",
        ])
        .arg("--model")
        .arg(fixture(model))
        .arg("--inputs")
        .arg(fixture(model).join("reference/vae_decoder.safetensors"))
        .arg("--output")
        .arg(&out)
        .arg("--debug")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = TensorFile::open(&out).unwrap();
    let refs = reference(model, "vae_decoder");
    for (name, ref_name) in [
        ("sample", "out_sample"),
        ("debug.post_quant_conv", "debug.post_quant_conv"),
        ("debug.decoder.mid_block", "debug.decoder.mid_block"),
    ] {
        let (shape, ours) = ref_floats(&written, name);
        let (ref_shape, expected) = ref_floats(&refs, ref_name);
        assert_eq!(shape, ref_shape, "{name}");
        let (_, rel) = compare(&format!("{model} forward {name}"), &ours, &expected);
        assert!(
            rel <= TOLERANCE,
            "{model} forward {name}: rel error {rel:.3e}"
        );
    }
}

#[test]
fn forward_command_names_a_misshaped_image() {
    let bad = scratch("bad-pixels.safetensors");
    let tensor = ti_xla::io::tensor_file::F32Tensor {
        name: "pixel_values".into(),
        shape: vec![1, 4, 16, 16],
        values: vec![0.0; 4 * 16 * 16],
    };
    ti_xla::io::tensor_file::write_f32_atomic(&bad, &[tensor], None).unwrap();
    let out = scratch("never-written.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["forward", "--component", "vae_encoder", "--model"])
        .arg(fixture("tiny-sd1"))
        .arg("--inputs")
        .arg(&bad)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("pixel_values")
            && err.contains("[1, 4, 16, 16]")
            && err.contains("[B, 3, H, W]"),
        "{err}"
    );
    assert!(!out.exists());
}
