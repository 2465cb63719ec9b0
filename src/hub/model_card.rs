//! The model card (`README.md`) a push uploads, after diffusers' `save_model_card` for
//! textual inversion: YAML front matter (`base_model`, `license`, `library_name`, `tags`)
//! and a description of the embedding: its token, how to load it in diffusers, AUTOMATIC1111
//! and ComfyUI, the training settings, and the latest validation images. Built from the run's
//! `train_settings.json`, so `ti-xla push` can rebuild it any time.

use std::fmt::Write;

use crate::train::settings::RunSettings;

/// What the repo holds besides the embedding, as the card shows it.
pub struct CardContents<'a> {
    pub repo_id: &'a str,
    pub settings: &'a RunSettings,
    /// The latest validation's step and its images' paths in the repo.
    pub validation: Option<(usize, Vec<String>)>,
    pub loss_plot: bool,
    pub full_pipeline: bool,
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar.
fn yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The token without its angle brackets, as a file name for A1111 and ComfyUI.
fn embedding_name(token: &str) -> String {
    let name: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if name.is_empty() {
        "my-embedding".into()
    } else {
        name
    }
}

pub fn model_card(c: &CardContents) -> String {
    let s = c.settings;
    let license = if s.sdxl {
        "openrail++"
    } else {
        "creativeml-openrail-m"
    };
    let mut tags = vec![
        "stable-diffusion",
        "stable-diffusion-diffusers",
        "text-to-image",
        "diffusers",
        "textual_inversion",
        "diffusers-training",
        "ti-xla",
    ];
    if s.sdxl {
        tags.insert(1, "stable-diffusion-xl");
    }
    let mut out = String::from("---\n");
    if let Some(base) = &s.base_model {
        let _ = writeln!(out, "base_model: {}", yaml(base));
    }
    let _ = writeln!(out, "library_name: diffusers");
    let _ = writeln!(out, "license: {license}");
    let _ = writeln!(out, "inference: true");
    let _ = writeln!(out, "tags:");
    for t in &tags {
        let _ = writeln!(out, "- {t}");
    }
    out.push_str("---\n\n");

    let base = s
        .base_model
        .clone()
        .unwrap_or_else(|| s.pretrained_model_name_or_path.clone());
    let base_text = match &s.base_model {
        Some(b) => format!("[{b}](https://huggingface.co/{b})"),
        None => format!("a local model folder (`{base}`)"),
    };
    let token = &s.placeholder_token;
    let _ = writeln!(
        out,
        "# Textual inversion text2image fine-tuning - {}\n",
        c.repo_id
    );
    let _ = writeln!(
        out,
        "These are textual inversion adaption weights for {base_text}, trained with \
         ti-xla (Textual Inversion on XLA). They teach the model the \
         token `{token}` ({} vector(s), learned as {} from the initializer `{}`); write it in \
         a prompt, e.g. `a photo of {token}`.\n",
        s.num_vectors, s.learnable_property, s.initializer_token
    );
    usage(&mut out, c, &base);
    settings_table(&mut out, s);
    if let Some((step, images)) = &c.validation {
        let prompt = s.validation_prompt.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "## Validation images\n\nStep {step}, prompt `{prompt}` (DPM-Solver++ 2M, 25 steps, guidance 7.5, seed {}):\n",
            s.seed
        );
        for (i, image) in images.iter().enumerate() {
            let _ = writeln!(out, "![img_{i}](./{image})");
        }
        out.push('\n');
    }
    if c.loss_plot {
        out.push_str("## Training loss\n\n![loss](./loss.png)\n");
    }
    out
}

fn usage(out: &mut String, c: &CardContents, base: &str) {
    let (repo, token) = (c.repo_id, &c.settings.placeholder_token);
    let name = embedding_name(token);
    out.push_str("## How to use\n\n### diffusers\n\n```python\nimport torch\n");
    if c.settings.sdxl {
        let _ = write!(
            out,
            "from diffusers import StableDiffusionXLPipeline\n\
             from huggingface_hub import hf_hub_download\n\
             from safetensors.torch import load_file\n\n\
             pipe = StableDiffusionXLPipeline.from_pretrained({base:?}, torch_dtype=torch.float16).to(\"cuda\")\n\
             state = load_file(hf_hub_download({repo:?}, \"learned_embeds.safetensors\"))\n\
             pipe.load_textual_inversion(state[\"clip_l\"], token={token:?}, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)\n\
             pipe.load_textual_inversion(state[\"clip_g\"], token={token:?}, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)\n"
        );
    } else {
        let _ = write!(
            out,
            "from diffusers import StableDiffusionPipeline\n\n\
             pipe = StableDiffusionPipeline.from_pretrained({base:?}, torch_dtype=torch.float16).to(\"cuda\")\n\
             pipe.load_textual_inversion({repo:?}, weight_name=\"learned_embeds.safetensors\")\n"
        );
    }
    let _ = write!(
        out,
        "image = pipe({:?}).images[0]\n```\n\n",
        format!("a photo of {token}")
    );
    if c.full_pipeline {
        let class = if c.settings.sdxl {
            "StableDiffusionXLPipeline"
        } else {
            "StableDiffusionPipeline"
        };
        let _ = writeln!(
            out,
            "The repo also holds the whole pipeline with the token already in its tokenizer and text encoder: `{class}.from_pretrained({repo:?})`.\n"
        );
    }
    let _ = writeln!(
        out,
        "### AUTOMATIC1111 / Forge\n\nDownload `learned_embeds.safetensors` into `embeddings/` as `{name}.safetensors` and write `{name}` in the prompt.\n\n\
         ### ComfyUI\n\nDownload `learned_embeds.safetensors` into `models/embeddings/` as `{name}.safetensors` and write `embedding:{name}` in the prompt.\n\n\
         ### ti-xla\n\n```bash\nti-xla generate --pretrained-model-name-or-path {base} --learned-embeds learned_embeds.safetensors --prompt \"a photo of {token}\"\n```\n"
    );
}

fn settings_table(out: &mut String, s: &RunSettings) {
    out.push_str("## Training settings\n\n| setting | value |\n|---|---|\n");
    let rows: Vec<(&str, String)> = vec![
        (
            "base model",
            s.base_model
                .clone()
                .unwrap_or_else(|| "local folder".into()),
        ),
        (
            "revision",
            s.revision.clone().unwrap_or_else(|| "main".into()),
        ),
        ("variant", s.variant.clone().unwrap_or_else(|| "-".into())),
        ("placeholder token", format!("`{}`", s.placeholder_token)),
        ("initializer token", format!("`{}`", s.initializer_token)),
        ("vectors", s.num_vectors.to_string()),
        ("learnable property", s.learnable_property.clone()),
        ("resolution", s.resolution.to_string()),
        ("batch size per device", s.train_batch_size.to_string()),
        ("devices", s.devices.to_string()),
        (
            "gradient accumulation steps",
            s.gradient_accumulation_steps.to_string(),
        ),
        ("training steps", s.max_train_steps.to_string()),
        ("learning rate", format!("{:e}", s.learning_rate)),
        ("lr scheduler", s.lr_scheduler.clone()),
        ("lr warm-up steps", s.lr_warmup_steps.to_string()),
        ("seed", s.seed.to_string()),
        ("precision", s.compute_dtype.clone()),
        ("ti-xla version", s.ti_xla_version.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RunSettings {
        RunSettings {
            pretrained_model_name_or_path: "org/sd".into(),
            base_model: Some("org/sd".into()),
            placeholder_token: "<cat-toy>".into(),
            initializer_token: "toy".into(),
            num_vectors: 1,
            ..RunSettings::default()
        }
    }

    #[test]
    fn front_matter_names_the_base_model_and_tags() {
        let s = settings();
        let card = model_card(&CardContents {
            repo_id: "me/cat",
            settings: &s,
            validation: Some((10, vec!["validation/step-10/0000.png".into()])),
            loss_plot: true,
            full_pipeline: false,
        });
        let front = card.split("---\n").nth(1).unwrap();
        assert!(front.contains("base_model: \"org/sd\"\n"), "{front}");
        assert!(front.contains("license: creativeml-openrail-m"), "{front}");
        for tag in [
            "textual_inversion",
            "stable-diffusion",
            "diffusers",
            "ti-xla",
        ] {
            assert!(front.contains(&format!("- {tag}\n")), "{tag}: {front}");
        }
        assert!(card.contains("load_textual_inversion(\"me/cat\""), "{card}");
        assert!(card.contains("![img_0](./validation/step-10/0000.png)"));
        assert!(card.contains("embedding:cat-toy"));
    }

    #[test]
    fn a_local_base_model_is_left_out_of_the_front_matter() {
        let s = RunSettings {
            base_model: None,
            pretrained_model_name_or_path: "./my-model".into(),
            sdxl: true,
            ..settings()
        };
        let card = model_card(&CardContents {
            repo_id: "me/cat",
            settings: &s,
            validation: None,
            loss_plot: false,
            full_pipeline: true,
        });
        let front = card.split("---\n").nth(1).unwrap();
        assert!(!front.contains("base_model"), "{front}");
        assert!(front.contains("license: openrail++"));
        assert!(
            card.contains("clip_g")
                && card.contains("StableDiffusionXLPipeline.from_pretrained(\"me/cat\")")
        );
    }
}
