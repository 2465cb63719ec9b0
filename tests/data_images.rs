//! Training images: Pillow's bicubic resize reproduced bit for bit, and odd files (grayscale,
//! RGBA, 16-bit, EXIF-rotated, webp/bmp/tiff) read as the RGB pixels the fixture script states.

mod fixtures_path;

use std::path::PathBuf;

use ti_xla::data::image_file::{has_image_extension, load_rgb8};

/// `tests/fixtures/data/<name>`.
fn data_file(name: &str) -> PathBuf {
    fixtures_path::fixture("data").join(name)
}

#[test]
fn bicubic_resize_equals_pillow_exactly() {
    let src = load_rgb8(&data_file("pattern.png")).unwrap();
    assert_eq!((src.width, src.height), (37, 23));
    for (w, h) in [(16, 16), (50, 41), (37, 11), (5, 23)] {
        let want = load_rgb8(&data_file(&format!("pattern_{w}x{h}.png"))).unwrap();
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
    let want = load_rgb8(&data_file("pattern_crop_16x16.png")).unwrap();
    assert_eq!(src.center_crop_square().resize_bicubic(16, 16), want);
}

#[test]
fn odd_files_read_as_the_stated_rgb() {
    let text = std::fs::read_to_string(data_file("expected_rgb.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = expected.as_object().unwrap();
    assert_eq!(cases.len(), 7);
    for (name, want) in cases {
        let img = load_rgb8(&data_file(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
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
        let err = format!("{:#}", load_rgb8(&data_file(name)).unwrap_err());
        assert!(err.contains(name), "{err}");
    }
    assert!(has_image_extension(&data_file("a.JPG")));
    assert!(!has_image_extension(&data_file("notes.txt")));
}

mod dataset {
    use std::collections::HashMap;

    use ti_xla::data::dataset::{epoch_plan, TrainImages};

    fn folder(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ti-xla-data-{}-{}",
            std::process::id(),
            files
                .iter()
                .map(|f| f.1)
                .collect::<Vec<_>>()
                .join("-")
                .replace('.', "_")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (fixture, name) in files {
            std::fs::copy(super::data_file(fixture), dir.join(name)).unwrap();
        }
        dir
    }

    #[test]
    fn folder_loads_images_skips_other_files_and_names_corrupt_ones() {
        let dir = folder(&[
            ("pattern.png", "b.png"),
            ("odd.bmp", "a.bmp"),
            ("expected_rgb.json", "notes.json"),
        ]);
        let (set, warnings) = TrainImages::load(&dir, 16, true).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.paths[0].ends_with("a.bmp"), "file-name order");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].ends_with("notes.json"));
        // The second image is the pattern: centre crop + Pillow bicubic to 16x16.
        let want = ti_xla::data::image_file::load_rgb8(&super::data_file("pattern_crop_16x16.png"))
            .unwrap();
        assert_eq!(set.images[1], want);

        std::fs::copy(super::data_file("corrupt.jpg"), dir.join("c.jpg")).unwrap();
        let err = format!("{:#}", TrainImages::load(&dir, 16, true).err().unwrap());
        assert!(err.contains("c.jpg"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        let empty = folder(&[("expected_rgb.json", "only.json")]);
        let err = format!("{:#}", TrainImages::load(&empty, 16, false).err().unwrap());
        assert!(err.contains("no training images"), "{err}");
        std::fs::remove_dir_all(&empty).unwrap();
        assert!(
            TrainImages::load(&empty, 16, false).is_err(),
            "missing folder"
        );
    }

    #[test]
    fn pixel_values_are_scaled_and_flipped_nchw() {
        let dir = folder(&[("pattern.png", "p.png")]);
        let (set, _) = TrainImages::load(&dir, 8, false).unwrap();
        let img = &set.images[0];
        let plain = ti_xla::data::dataset::Sample {
            image: 0,
            template: 0,
            flip: false,
        };
        let flipped = ti_xla::data::dataset::Sample {
            flip: true,
            ..plain
        };
        let px = set.pixel_values(&[plain, flipped]);
        assert_eq!(px.len(), 2 * 3 * 64);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let v = img.data[(y * 8 + x) * 3 + c] as f32 / 127.5 - 1.0;
                    assert_eq!(px[(c * 8 + y) * 8 + x], half::bf16::from_f32(v));
                    assert_eq!(px[192 + (c * 8 + y) * 8 + (7 - x)], half::bf16::from_f32(v));
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn epoch_plans_are_permutations_seeded_by_seed_and_epoch() {
        let (images, repeats, templates) = (5, 40, 27);
        let a = epoch_plan(42, 0, images, repeats, templates);
        assert_eq!(
            a,
            epoch_plan(42, 0, images, repeats, templates),
            "deterministic"
        );
        assert_ne!(
            a,
            epoch_plan(42, 1, images, repeats, templates),
            "reshuffled each epoch"
        );
        assert_ne!(a, epoch_plan(43, 0, images, repeats, templates), "seeded");
        let mut count = HashMap::new();
        for s in &a {
            *count.entry(s.image).or_insert(0) += 1;
            assert!(s.template < templates);
        }
        assert!(count.values().all(|&c| c == repeats), "{count:?}");
        // Flips and templates are fair coins/dice: loose 5-sigma bounds over 200 draws.
        let flips = a.iter().filter(|s| s.flip).count();
        assert!((65..=135).contains(&flips), "{flips}");
        assert!(a.windows(2).any(|w| w[0].image != w[1].image));
    }
}

/// `--masked-loss`'s latent masks against scripts/make_mask_fixtures.py (Pillow and numpy):
/// from an alpha channel and from a `.mask.png`, squashed and centre-cropped, plain and
/// mirrored.
#[test]
fn loss_masks_match_the_script_reference() {
    use ti_xla::data::dataset::Sample;
    use ti_xla::data::loss_masks::LossMasks;
    let dir = data_file("masks");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let resolution = expected["resolution"].as_u64().unwrap() as usize;
    let factor = expected["factor"].as_u64().unwrap() as usize;
    let names = ["alpha.png", "banded.png"];
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for crop in [false, true] {
        let masks = LossMasks::load(&paths, resolution, crop, factor).unwrap();
        assert_eq!(masks.masked, 2);
        for (image, name) in names.iter().enumerate() {
            for flip in [false, true] {
                let got = masks.batch(&[Sample {
                    image,
                    template: 0,
                    flip,
                }]);
                let want = &expected[name][crop.to_string()][flip as usize];
                let want: Vec<f64> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert_eq!(got.len(), want.len());
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                assert!(worst <= 1e-6, "{name} crop {crop} flip {flip}: {worst:.1e}");
            }
        }
    }
    // An image without alpha or mask file weighs every pixel 1; a mask of another size is
    // refused by name.
    let plain = [data_file("pattern.png")];
    let masks = LossMasks::load(&plain, resolution, false, factor).unwrap();
    assert_eq!(masks.masked, 0);
    let one = Sample {
        image: 0,
        template: 0,
        flip: false,
    };
    assert!(masks.batch(&[one]).iter().all(|&v| v == 1.0));
    let odd = std::env::temp_dir().join(format!("ti-xla-mask-{}", std::process::id()));
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(dir.join("banded.png"), odd.join("x.png")).unwrap();
    std::fs::copy(data_file("pattern.png"), odd.join("x.mask.png")).unwrap();
    let err = LossMasks::load(&[odd.join("x.png")], resolution, false, factor)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(err.contains("x.mask.png") && err.contains("size"), "{err}");
    std::fs::remove_dir_all(&odd).unwrap();
}
