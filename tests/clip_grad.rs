//! The gradient the trainer needs, checked numerically: d loss / d token table through the
//! whole traced CLIPTextModel (tiny-sd2, computed in f64 so central differences are exact to
//! ~1e-9), for entries of rows the prompt uses and of a row it does not.

use std::path::Path;

use ti_xla::io::tensor_file::TensorFile;
use ti_xla::io::weights::{component_files, WeightFiles};
use ti_xla::model::folder::ModelFolder;
use ti_xla::pjrt::{CompileOptions, DeviceBuffer};
use ti_xla::runtime::device_weights::DeviceWeights;
use xla_graphs::models::clip::CLIPTextModel;
use xla_graphs::models::params::Params;
use xla_graphs::{value_and_grad, DType, Graph, Shape};

#[test]
fn token_table_gradient_matches_central_differences() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd2");
    let folder = ModelFolder::open(root.to_str().unwrap(), None, None).unwrap();
    let refs = TensorFile::open(&root.join("reference/text_encoder.safetensors")).unwrap();
    let (shape, ids) = refs.ints("input_ids", &[None, None], "ids").unwrap();
    let dims = [shape[0] as i64, shape[1] as i64];
    let config = folder.text_encoder.clone();
    let (vocab, hidden) = (config.vocab_size as i64, config.hidden_size as i64);

    let g = Graph::new();
    let p = Params::new(&g, DType::F64);
    let input_ids = p.input("input_ids", Shape::new(DType::I64, &dims)).unwrap();
    let model = CLIPTextModel::new(config).unwrap();
    // As the trainer will: the frozen table is a weight and the trainable part is added to
    // it; d loss / d delta is d loss / d table.
    let frozen = model.token_embedding(&p).unwrap();
    let delta = p
        .input("delta", Shape::new(DType::F64, &[vocab, hidden]))
        .unwrap();
    let table = frozen.add(&delta).unwrap();
    let y = model
        .forward_with_token_embedding(&p, &input_ids, &table)
        .unwrap();
    // A fixed, uneven weighting so no entry's gradient vanishes by symmetry.
    let n = y.shape().numel() as usize;
    let c: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    let c = g.constant_vec(&y.dims(), c).unwrap();
    let loss = y.multiply(&c).unwrap().sum_all().unwrap();
    let (loss, grads) = value_and_grad(&loss, &[delta]).unwrap();
    let program = g.to_stablehlo(&[&loss, &grads[0]]).unwrap();

    let client = ti_xla::testing::cpu_client(1).unwrap();
    let exe = client
        .compile(&program, &CompileOptions::replicated(1))
        .unwrap();
    let files = WeightFiles::open(
        &component_files(&folder.component("text_encoder"), "model", None).unwrap(),
    )
    .unwrap();
    let weights = DeviceWeights::upload(&client, &files, &p.specs(), 1, "text_encoder").unwrap();
    let ids_buffer = client.buffer_from_host(&ids, &dims, 0).unwrap();
    let run = |t: &[f64]| -> (f64, Vec<f64>) {
        let tb: DeviceBuffer = client.buffer_from_host(t, &[vocab, hidden], 0).unwrap();
        let args = weights.arguments(&[vec![&ids_buffer, &tb]]).unwrap();
        let out = exe.execute(&args).unwrap().pop().unwrap();
        (
            out[0].to_vec::<f64>().unwrap()[0],
            out[1].to_vec::<f64>().unwrap(),
        )
    };
    let zero = vec![0.0; (vocab * hidden) as usize];
    let (_, grad) = run(&zero);
    let used = ids[1] as usize; // a word of the second prompt
    let unused = (0..vocab as usize)
        .find(|r| !ids.contains(&(*r as i64)))
        .unwrap();
    let h = 1e-5;
    for (row, col) in [(used, 0), (used, 7), (ids[0] as usize, 3), (unused, 1)] {
        let i = row * hidden as usize + col;
        let mut t = zero.clone();
        t[i] += h;
        let (up, _) = run(&t);
        t[i] -= 2.0 * h;
        let (down, _) = run(&t);
        let fd = (up - down) / (2.0 * h);
        println!("row {row} col {col}: grad {:.9} fd {fd:.9}", grad[i]);
        assert!(
            (grad[i] - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
            "row {row} col {col}: {} vs {fd}",
            grad[i]
        );
    }
    assert_eq!(grad[unused * hidden as usize + 1], 0.0);
}
