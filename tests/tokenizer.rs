//! `ClipTokenizer` against transformers' `CLIPTokenizer`: the ids in
//! tests/fixtures/tokenizer_cases.json (made by scripts/make_fixtures.py) for both fixture
//! tokenizers, before and after adding placeholder tokens, plus the errors users can hit.

mod fixtures_path;

use std::path::PathBuf;

use fixtures_path::fixture;
use serde_json::Value;
use ti_xla::model::tokenizer::{placeholder_token_names, ClipTokenizer};

fn tokenizer_dir(model: &str) -> PathBuf {
    fixture(model).join("tokenizer")
}

fn cases() -> Value {
    let path = fixture("tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer_cases.json is readable");
    serde_json::from_str(&text).expect("tokenizer_cases.json is valid JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn model<'a>(all: &'a Value, name: &str) -> &'a Value {
    &all["models"][name]
}

/// Every case's ids, for a fresh tokenizer, one with the placeholder and one with three vectors.
fn check_cases(name: &str, load: impl Fn() -> ClipTokenizer) {
    let all = cases();
    let m = model(&all, name);
    let placeholder = all["placeholder_token"].as_str().unwrap();
    let num_vectors = all["num_vectors"].as_u64().unwrap() as usize;
    let max_length = all["max_length"].as_u64().unwrap() as usize;

    let base = load();
    let mut one = load();
    let mut multi = load();
    assert_eq!(base.max_length(), max_length, "{name}");
    assert_eq!(
        base.vocab_size(),
        m["vocab_size"].as_u64().unwrap() as usize,
        "{name}"
    );
    assert_eq!(base.pad_token(), m["pad_token"].as_str().unwrap(), "{name}");
    assert_eq!(
        one.add_placeholder_tokens(placeholder, 1).unwrap(),
        ids(&m["placeholder_ids"]),
        "{name}"
    );
    assert_eq!(
        multi
            .add_placeholder_tokens(placeholder, num_vectors)
            .unwrap(),
        ids(&m["multi_vector_placeholder_ids"]),
        "{name}"
    );
    assert_eq!(
        multi.vocab_size(),
        base.vocab_size() + num_vectors,
        "{name}"
    );

    let list = m["cases"].as_array().unwrap();
    assert!(list.len() >= 20, "{name}: {} cases", list.len());
    let mut failures = Vec::new();
    for case in list {
        let text = case["text"].as_str().unwrap();
        for (key, tok) in [
            ("ids", &base),
            ("ids_with_placeholder", &one),
            ("ids_with_multi_vector_placeholder", &multi),
        ] {
            let got = tok.encode(text).unwrap();
            assert_eq!(got.len(), max_length, "{name} {key} {text:?}");
            let want = ids(&case[key]);
            if got != want {
                failures.push(format!(
                    "{name} {key} {text:?}\n  got  {got:?}\n  want {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sd1_ids_match_transformers() {
    check_cases("tiny-sd1", || {
        ClipTokenizer::from_dir(tokenizer_dir("tiny-sd1")).unwrap()
    });
}

#[test]
fn sd2_ids_match_transformers_from_tokenizer_json() {
    assert!(tokenizer_dir("tiny-sd2").join("tokenizer.json").is_file());
    check_cases("tiny-sd2", || {
        ClipTokenizer::from_dir(tokenizer_dir("tiny-sd2")).unwrap()
    });
}

#[test]
fn sd2_ids_match_transformers_from_vocab_and_merges() {
    check_cases("tiny-sd2", || {
        ClipTokenizer::from_vocab_and_merges(tokenizer_dir("tiny-sd2")).unwrap()
    });
}

#[test]
fn reference_check_strings() {
    // REFERENCE.md's check strings (real CLIP vocabulary), independent of the fixture script.
    let mut tok = ClipTokenizer::from_dir(tokenizer_dir("tiny-sd1")).unwrap();
    let photo = [
        49406, 320, 1125, 539, 320, 283, 2368, 268, 5988, 285, 5988, 49407,
    ];
    let statue = [
        49406, 320, 2368, 8222, 267, 530, 518, 1844, 539, 2451, 19697, 49407,
    ];
    let encoded = tok.encode("a photo of a <cat-toy> toy").unwrap();
    assert_eq!(encoded[..12], photo);
    assert!(
        encoded[12..].iter().all(|&id| id == 49407),
        "padded with <|endoftext|>"
    );
    assert_eq!(
        tok.encode("A cat statue, in the style of van gogh")
            .unwrap()[..12],
        statue
    );
    assert_eq!(tok.add_placeholder_tokens("<cat-toy>", 1).unwrap(), [49408]);
    assert_eq!(
        tok.encode("a photo of a <cat-toy> toy").unwrap()[..8],
        [49406, 320, 1125, 539, 320, 49408, 5988, 49407]
    );
}

#[test]
fn initializer_must_be_one_existing_token() {
    let all = cases();
    for name in ["tiny-sd1", "tiny-sd2"] {
        let mut tok = ClipTokenizer::from_dir(tokenizer_dir(name)).unwrap();
        let placeholder = all["placeholder_token"].as_str().unwrap();
        tok.add_placeholder_tokens(placeholder, 1).unwrap();
        let words = model(&all, name)["initializer_ids"].as_object().unwrap();
        let (mut singles, mut multis) = (0, 0);
        for (word, want) in words {
            let want = ids(want);
            assert_eq!(
                tok.encode_without_special_tokens(word).unwrap(),
                want,
                "{name} {word}"
            );
            match tok.encode_initializer(word) {
                Ok(id) => {
                    assert_eq!(vec![id], want, "{name} {word}");
                    singles += 1;
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(want.len() != 1, "{name} {word}: {msg}");
                    assert!(
                        msg.contains(word.as_str()) && msg.contains("single token"),
                        "{msg}"
                    );
                    assert!(!msg.contains('\n'), "one line: {msg}");
                    multis += 1;
                }
            }
        }
        assert!(multis > 0, "{name}: the cases include multi-token words");
        if name == "tiny-sd1" {
            assert!(singles > 0, "{name}: the cases include single-token words");
        }
        let err = tok.encode_initializer(placeholder).unwrap_err().to_string();
        assert!(err.contains("placeholder"), "{err}");
        let err = tok.encode_initializer("").unwrap_err().to_string();
        assert!(err.contains("0 tokens"), "{err}");
    }
}

#[test]
fn placeholder_that_exists_is_an_error() {
    let mut tok = ClipTokenizer::from_dir(tokenizer_dir("tiny-sd1")).unwrap();
    let size = tok.vocab_size();

    // A token of the vocabulary.
    let err = tok
        .add_placeholder_tokens("<|endoftext|>", 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("<|endoftext|>") && err.contains("already contains"),
        "{err}"
    );
    assert!(
        err.contains("--placeholder_token") && !err.contains('\n'),
        "{err}"
    );

    // Added twice.
    let ids = tok.add_placeholder_tokens("<my-thing>", 2).unwrap();
    assert_eq!(ids, [size as u32, size as u32 + 1]);
    let err = tok
        .add_placeholder_tokens("<my-thing>", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"<my-thing>\""), "{err}");

    // Only one of the extra vectors' names exists: it is named and nothing is added.
    let mut tok = ClipTokenizer::from_dir(tokenizer_dir("tiny-sd1")).unwrap();
    tok.add_placeholder_tokens("<obj>_2", 1).unwrap();
    let before = tok.vocab_size();
    let err = tok
        .add_placeholder_tokens("<obj>", 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"<obj>_2\""), "{err}");
    assert_eq!(tok.vocab_size(), before, "nothing added on error");

    let err = tok
        .add_placeholder_tokens("<other>", 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_vectors"), "{err}");
}

#[test]
fn placeholder_names_follow_diffusers() {
    assert_eq!(placeholder_token_names("<cat-toy>", 1), ["<cat-toy>"]);
    assert_eq!(
        placeholder_token_names("<cat-toy>", 3),
        ["<cat-toy>", "<cat-toy>_1", "<cat-toy>_2"]
    );
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let dir = fixture("tiny-sd1"); // the model root, not its tokenizer/ folder
    let err = ClipTokenizer::from_dir(&dir)
        .err()
        .expect("no tokenizer files there")
        .to_string();
    assert!(
        err.contains("vocab.json + merges.txt") && err.contains("tiny-sd1"),
        "{err}"
    );
}
