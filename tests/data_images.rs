//! Training images: Pillow's bicubic resize reproduced bit for bit, and odd files (grayscale,
//! RGBA, 16-bit, EXIF-rotated, webp/bmp/tiff) read as the RGB pixels the fixture script states.

use std::path::PathBuf;

use ti_xla::data::image_file::{has_image_extension, load_rgb8};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

#[test]
fn bicubic_resize_equals_pillow_exactly() {
    let src = load_rgb8(&fixture("pattern.png")).unwrap();
    assert_eq!((src.width, src.height), (37, 23));
    for (w, h) in [(16, 16), (50, 41), (37, 11), (5, 23)] {
        let want = load_rgb8(&fixture(&format!("pattern_{w}x{h}.png"))).unwrap();
        let got = src.resize_bicubic(w, h);
        let diffs = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diffs,
            0,
            "{w}x{h}: {diffs} of {} bytes differ from Pillow",
            want.data.len()
        );
    }
    let want = load_rgb8(&fixture("pattern_crop_16x16.png")).unwrap();
    assert_eq!(src.center_crop_square().resize_bicubic(16, 16), want);
}

#[test]
fn odd_files_read_as_the_stated_rgb() {
    let text = std::fs::read_to_string(fixture("expected_rgb.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = expected.as_object().unwrap();
    assert_eq!(cases.len(), 7);
    for (name, want) in cases {
        let img = load_rgb8(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let rgb: Vec<u8> = want["rgb"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            (img.width as u64, img.height as u64),
            (
                want["width"].as_u64().unwrap(),
                want["height"].as_u64().unwrap()
            ),
            "{name}"
        );
        assert_eq!(img.data, rgb, "{name}");
    }
}

#[test]
fn corrupt_and_fake_images_name_the_file() {
    for name in ["corrupt.jpg", "not_an_image.png"] {
        let err = format!("{:#}", load_rgb8(&fixture(name)).unwrap_err());
        assert!(err.contains(name), "{err}");
    }
    assert!(has_image_extension(&fixture("a.JPG")));
    assert!(!has_image_extension(&fixture("notes.txt")));
}
