//! What a training run reports besides its embedding: TensorBoard event files (decoded here
//! from the bytes: record framing with masked CRC-32C, then the protobuf wire format, with no
//! code of ti-xla's), `loss.png` and `ti-xla plot`. TensorBoard's own reader was run on the
//! same files by `scripts/check_tensorboard.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod scratch;
use scratch::{fixture, fresh_dir, ok, train_tiny};

fn train(out: &Path, extra: &[&str]) -> Output {
    train_tiny(out, &fixture("sample-images"), extra)
}

fn ti_xla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(args)
        .output()
        .unwrap()
}

/// TFRecord's masked CRC-32C.
fn masked(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The records of an event file, each checked against its two CRCs.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(crc, masked(len_bytes), "length CRC of record {}", out.len());
        let data = &bytes[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(crc, masked(data), "data CRC of record {}", out.len());
        out.push(data.to_vec());
        at += 16 + len;
    }
    assert_eq!(at, bytes.len(), "no trailing bytes");
    out
}

/// A protobuf field's value: varint, 64-bit, length-delimited or 32-bit.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*at];
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return v;
        }
    }
    panic!("varint too long")
}

/// A message's fields by number, in order.
fn fields(b: &[u8]) -> BTreeMap<u64, Vec<Field>> {
    let mut out: BTreeMap<u64, Vec<Field>> = BTreeMap::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at);
        let value = match key & 7 {
            0 => Field::Varint(varint(b, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(u64::from_le_bytes(b[at - 8..at].try_into().unwrap()))
            }
            2 => {
                let len = varint(b, &mut at) as usize;
                at += len;
                Field::Bytes(b[at - len..at].to_vec())
            }
            5 => {
                at += 4;
                Field::Fixed32(u32::from_le_bytes(b[at - 4..at].try_into().unwrap()))
            }
            t => panic!("wire type {t}"),
        };
        out.entry(key >> 3).or_default().push(value);
    }
    out
}

fn bytes(m: &BTreeMap<u64, Vec<Field>>, n: u64) -> Vec<Vec<u8>> {
    m.get(&n)
        .into_iter()
        .flatten()
        .map(|f| match f {
            Field::Bytes(b) => b.clone(),
            other => panic!("field {n}: {other:?}"),
        })
        .collect()
}

fn text(m: &BTreeMap<u64, Vec<Field>>, n: u64) -> String {
    String::from_utf8(bytes(m, n).remove(0)).unwrap()
}

/// One summary value of an event, decoded: (step, tag, its fields).
struct Value {
    step: u64,
    tag: String,
    fields: BTreeMap<u64, Vec<Field>>,
}

fn event_files(out: &Path) -> Vec<PathBuf> {
    let dir = out.join("logs/textual_inversion");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn tensorboard_gets_the_loss_lr_images_and_hyper_parameters() {
    let out = fresh_dir("tensorboard");
    ok(&train(
        &out,
        &[
            "--validation_prompt",
            "a photo of <cat-toy>",
            "--validation_steps",
            "6",
        ],
    ));
    let files = event_files(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");

    let records = records(&files[0]);
    // Event: wall_time 1 (double), step 2, file_version 3, summary 5.
    let first = fields(&records[0]);
    assert_eq!(text(&first, 3), "brain.Event:2");
    let mut values = Vec::new();
    for r in &records[1..] {
        let e = fields(r);
        assert!(matches!(e[&1][0], Field::Fixed64(t) if f64::from_bits(t) > 1.6e9));
        let step = match e.get(&2).map(|v| v[0].clone()) {
            Some(Field::Varint(s)) => s,
            None => 0,
            other => panic!("step {other:?}"),
        };
        for summary in bytes(&e, 5) {
            for v in bytes(&fields(&summary), 1) {
                let fields = fields(&v);
                let tag = text(&fields, 1);
                values.push(Value { step, tag, fields });
            }
        }
    }

    // Scalars (Summary.Value.simple_value, field 2): each step's loss and lr, as
    // train_log.jsonl has them (float32 in the event).
    let log: Vec<serde_json::Value> = std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 12);
    for tag in ["loss", "lr"] {
        let got: Vec<(u64, f32)> = values
            .iter()
            .filter(|v| v.tag == tag)
            .map(|v| match v.fields[&2][0] {
                Field::Fixed32(bits) => (v.step, f32::from_bits(bits)),
                ref other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(u64, f32)> = log
            .iter()
            .map(|r| {
                (
                    r["step"].as_u64().unwrap() + 1,
                    r[tag].as_f64().unwrap() as f32,
                )
            })
            .collect();
        assert_eq!(got, want, "{tag}");
    }
    // The linear schedule (diffusers' LambdaLR, no warm-up): step s ran at
    // 5e-3 * (12 - (s - 1)) / 12.
    for v in values.iter().filter(|v| v.tag == "lr") {
        let Field::Fixed32(bits) = v.fields[&2][0] else {
            panic!("lr is a float")
        };
        let want = (5e-3 * (13 - v.step) as f64 / 12.0) as f32;
        assert!(
            (f32::from_bits(bits) - want).abs() <= 1e-9,
            "step {}",
            v.step
        );
    }

    // Images (field 4: height 1, width 2, colorspace 3, PNG 4): the grid of each validation.
    let images: Vec<&Value> = values.iter().filter(|v| v.tag == "validation").collect();
    assert_eq!(images.iter().map(|v| v.step).collect::<Vec<_>>(), [6, 12]);
    for v in images {
        let image = fields(&bytes(&v.fields, 4)[0]);
        let png = bytes(&image, 4).remove(0);
        let grid = out.join(format!("validation/step-{}/grid.png", v.step));
        assert_eq!(png, std::fs::read(&grid).unwrap(), "the grid's bytes");
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!(image[&1][0], Field::Varint(decoded.height() as u64));
        assert_eq!(image[&2][0], Field::Varint(decoded.width() as u64));
        assert_eq!(image[&3][0], Field::Varint(3));
    }

    // Hyper-parameters: metadata (9) -> plugin_data (1) -> plugin_name "hparams" (1) and
    // content (2): HParamsPluginData with session_start_info (3) -> hparams map (1) of
    // google.protobuf.Value (number 2, string 3, bool 4).
    let hparams = |tag: &str| -> BTreeMap<u64, Vec<Field>> {
        let v = values.iter().find(|v| v.tag == tag).expect(tag);
        let plugin = fields(&bytes(&fields(&bytes(&v.fields, 9)[0]), 1)[0]);
        assert_eq!(text(&plugin, 1), "hparams");
        fields(&bytes(&plugin, 2)[0])
    };
    let start = fields(&bytes(&hparams("_hparams_/session_start_info"), 3)[0]);
    let settings: BTreeMap<String, BTreeMap<u64, Vec<Field>>> = bytes(&start, 1)
        .iter()
        .map(|entry| {
            let entry = fields(entry);
            (text(&entry, 1), fields(&bytes(&entry, 2)[0]))
        })
        .collect();
    assert_eq!(text(&settings["placeholder_token"], 3), "<cat-toy>");
    assert_eq!(
        settings["learning_rate"][&2][0],
        Field::Fixed64(5e-3f64.to_bits())
    );
    assert_eq!(
        settings["train_batch_size"][&2][0],
        Field::Fixed64(2f64.to_bits())
    );
    let experiment = fields(&bytes(&hparams("_hparams_/experiment"), 2)[0]);
    assert_eq!(
        bytes(&experiment, 4).len(),
        settings.len(),
        "one info per setting"
    );

    // --report-to none: no logs.
    let none = fresh_dir("tensorboard-none");
    ok(&train(&none, &["--report_to", "none"]));
    assert!(!none.join("logs").exists());
    // --overwrite replaces the earlier run's logs with the new run's (one event file).
    ok(&train(&out, &["--overwrite"]));
    let again = event_files(&out);
    assert_eq!(again.len(), 1);
    assert_ne!(again, files);
}

/// Title text of a PNG (iTXt or tEXt), read with the png crate's decoder.
fn png_title(path: &Path) -> Option<String> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    info.utf8_text
        .iter()
        .find(|t| t.keyword == "Title")
        .map(|t| t.get_text().unwrap())
        .or_else(|| {
            info.uncompressed_latin1_text
                .iter()
                .find(|t| t.keyword == "Title")
                .map(|t| t.text.clone())
        })
}

#[test]
fn loss_png_is_a_titled_plot_and_ti_xla_plot_redraws_it() {
    let out = fresh_dir("plot");
    ok(&train(&out, &["--report_to", "none"]));
    let plot = out.join("loss.png");
    let title = png_title(&plot).unwrap();
    assert_eq!(title, "Textual Inversion of <cat-toy> on tiny-sd1");
    let first = image::open(&plot).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (960, 540));

    // Redrawn from the log: the same picture, the same title (kept in the PNG); with the
    // plot gone, a title naming the folder.
    let dir = out.to_str().unwrap();
    ok(&ti_xla(&["plot", dir]));
    assert_eq!(png_title(&plot).unwrap(), title);
    assert_eq!(image::open(&plot).unwrap().to_rgb8(), first);
    std::fs::remove_file(&plot).unwrap();
    ok(&ti_xla(&["plot", dir]));
    assert_eq!(png_title(&plot).unwrap(), "Textual Inversion loss: plot");
    // A log still being written (a cut last line) draws all the same; --title and --output.
    let mut log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    log.push_str("{\"step\":12,\"lo");
    std::fs::write(out.join("train_log.jsonl"), log).unwrap();
    let elsewhere = out.join("mine.png");
    ok(&ti_xla(&[
        "plot",
        dir,
        "--title",
        "mine",
        "-o",
        elsewhere.to_str().unwrap(),
    ]));
    assert_eq!(png_title(&elsewhere).unwrap(), "mine");
    assert_eq!(
        image::open(&elsewhere).unwrap().to_rgb8().dimensions(),
        (960, 540)
    );

    // A loss.png that ti-xla did not write is not replaced; no log is a one-line error.
    let user = fresh_dir("plot-user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::copy(out.join("train_log.jsonl"), user.join("train_log.jsonl")).unwrap();
    std::fs::write(user.join("loss.png"), b"my own picture").unwrap();
    let refused = ti_xla(&["plot", user.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not written by ti-xla") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read(user.join("loss.png")).unwrap(),
        b"my own picture"
    );
    let empty = fresh_dir("plot-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let refused = ti_xla(&["plot", empty.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("train_log.jsonl"),
        "{err}"
    );
}
