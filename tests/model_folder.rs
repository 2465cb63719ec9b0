//! Model folders: local fixtures parse into typed configs; bad paths explain themselves.

mod fixtures_path;

use fixtures_path::fixture;
use ti_xla::model::folder::ModelFolder;
use xla_graphs::models::config_value::PerBlock;

#[test]
fn fixture_configs_parse_with_their_distinguishing_fields() {
    let sd1 = ModelFolder::open(fixture("tiny-sd1").to_str().unwrap(), None, None).unwrap();
    assert_eq!(sd1.text_encoder.hidden_act, "quick_gelu");
    assert_eq!(sd1.unet.attention_head_dim, PerBlock::One(2));
    assert!(!sd1.unet.use_linear_projection);
    assert_eq!(sd1.vae.scaling_factor, 0.18215);
    assert_eq!(sd1.scheduler["prediction_type"], "epsilon");

    let sd2 = ModelFolder::open(fixture("tiny-sd2").to_str().unwrap(), None, None).unwrap();
    assert_eq!(sd2.text_encoder.hidden_act, "gelu");
    assert_eq!(sd2.unet.block_plan().unwrap().heads, vec![2, 4, 4]);
    assert!(sd2.unet.use_linear_projection && sd2.unet.upcast_attention);
    assert_eq!(sd2.vae.scaling_factor, 0.13025);
    assert_eq!(sd2.scheduler["prediction_type"], "v_prediction");
}

#[test]
fn wrong_paths_are_one_line_errors() {
    let err = ModelFolder::open("./no/such/folder", None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = ModelFolder::open(fixture("tiny-sd1/unet").to_str().unwrap(), None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a diffusers model folder"), "{err}");
    // Repo ids (downloaded, or looked up in the cache offline) are tested in hub_download.rs
    // against a local stand-in for the Hub: a test here would reach the network.
}
