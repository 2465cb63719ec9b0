//! A user's files are never destroyed (issue 13, items 1-4, 10, 14): an output folder that is,
//! holds or lies in the model is refused; a full pipeline never replaces the user's files;
//! `--overwrite` removes only what ti-xla wrote, and only once the new run has succeeded; one
//! run per output folder; Ctrl-C and SIGTERM stop cleanly; a resume does not repeat log lines
//! and stale checkpoint temporaries are removed. Every case checks the exit status, the one-line
//! message and that the files that were there are byte-identical afterwards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod scratch;
use scratch::{compile_cache, copy_model, empty_dir, fixture, ok};

fn train_cmd(model: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.args(["train", "--pretrained-model-name-or-path"])
        .arg(model)
        .arg("--train-data-dir")
        .arg(fixture("sample-images"))
        .args([
            "--placeholder-token",
            "<cat-toy>",
            "--initializer-token",
            "toy",
        ])
        .args([
            "--resolution",
            "16",
            "--train-batch-size",
            "4",
            "--learning-rate",
            "5e-3",
        ])
        .args(["--max-train-steps", "3", "--checkpointing-steps", "0"])
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra);
    cmd
}

fn train(model: &Path, out: &Path, extra: &[&str]) -> Output {
    train_cmd(model, out, extra).output().expect("run ti-xla")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// A failed run: non-zero exit, one `error:` line naming `needle`, no panic.
fn one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_output_folder_in_or_around_the_model_is_refused() {
    let dir = empty_dir("model-overlap");
    let model = dir.join("m");
    copy_model(&fixture("tiny-sd1"), &model);
    let before = snapshot(&model);
    for (out, how) in [
        (model.clone(), "is the model folder"),
        (model.join("sub/out"), "lies inside the model folder"),
        (dir.clone(), "holds the model folder"),
        (model.join("../m/."), "is the model folder"),
    ] {
        let run = train(&model, &out, &["--save-as-full-pipeline"]);
        one_line_error(&run, how);
        assert_eq!(snapshot(&model), before, "the model changed ({how})");
    }
    // Retraining a saved pipeline into itself with --overwrite.
    let saved = dir.join("saved");
    ok(&train(&model, &saved, &["--save-as-full-pipeline"]));
    let saved_before = snapshot(&saved);
    let run = train(&saved, &saved, &["--save-as-full-pipeline", "--overwrite"]);
    one_line_error(&run, "is the model folder");
    assert_eq!(snapshot(&saved), saved_before);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_pipeline_never_replaces_the_users_files() {
    let dir = empty_dir("user-files");
    let out = dir.join("out");
    for (rel, text) in [
        ("model_index.json", "{\"mine\": true}"),
        ("tokenizer/vocab.json", "mine"),
        ("unet/config.json", "mine"),
    ] {
        std::fs::create_dir_all(out.join(rel).parent().unwrap()).unwrap();
        std::fs::write(out.join(rel), text).unwrap();
    }
    let before = snapshot(&out);
    for extra in [&[][..], &["--overwrite"]] {
        let mut args = vec!["--save-as-full-pipeline"];
        args.extend(extra);
        let run = train(&fixture("tiny-sd1"), &out, &args);
        one_line_error(&run, "was not written by ti-xla");
        let after = snapshot(&out);
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "{}", k.display());
        }
        assert!(!out.join("learned_embeds.safetensors").exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn overwrite_removes_only_ti_xlas_files_and_only_after_success() {
    let dir = empty_dir("overwrite");
    let out = dir.join("out");
    let model = fixture("tiny-sd1");
    ok(&train(&model, &out, &["--checkpointing-steps", "2"]));
    assert!(out.join("checkpoint-2").is_dir());
    for (rel, text) in [
        ("learned_embeds.txt", "mine"),
        ("checkpoint-7/mine.txt", "mine"),
        ("validation/mine.txt", "mine"),
    ] {
        std::fs::create_dir_all(out.join(rel).parent().unwrap()).unwrap();
        std::fs::write(out.join(rel), text).unwrap();
    }
    let first = snapshot(&out);
    // A failing replacement (NaN loss) leaves every earlier file as it was.
    let run = train(&model, &out, &["--overwrite", "--learning-rate", "1e30"]);
    assert!(!run.status.success());
    let after = snapshot(&out);
    for (k, v) in &first {
        if k.starts_with(".ti-xla.lock") || k.starts_with(".ti-xla-manifest.json") {
            continue;
        }
        assert_eq!(
            after.get(k),
            Some(v),
            "{} changed by a failed run",
            k.display()
        );
    }
    // A successful one replaces the earlier run's files and keeps the user's.
    ok(&train(
        &model,
        &out,
        &["--overwrite", "--max-train-steps", "2"],
    ));
    for rel in [
        "learned_embeds.txt",
        "checkpoint-7/mine.txt",
        "validation/mine.txt",
    ] {
        assert_eq!(std::fs::read(out.join(rel)).unwrap(), b"mine", "{rel}");
    }
    assert!(
        !out.join("checkpoint-2").exists(),
        "the earlier run's checkpoint stays"
    );
    assert_ne!(
        std::fs::read(out.join("learned_embeds.safetensors")).unwrap(),
        first[Path::new("learned_embeds.safetensors")]
    );
    // Checkpoint pruning leaves the user's checkpoint-7/ alone too.
    ok(&train(
        &model,
        &out,
        &[
            "--overwrite",
            "--checkpointing-steps",
            "1",
            "--checkpoints-total-limit",
            "1",
        ],
    ));
    assert_eq!(
        std::fs::read(out.join("checkpoint-7/mine.txt")).unwrap(),
        b"mine"
    );
    assert!(out.join("checkpoint-3").is_dir() && !out.join("checkpoint-2").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_run_into_a_locked_folder_is_refused_naming_the_holder() {
    let dir = empty_dir("lock");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".ti-xla.lock"))
        .unwrap();
    held.try_lock().unwrap();
    held.write_all(b"pid 4242 on testhost").unwrap();
    let run = train(&fixture("tiny-sd1"), &out, &[]);
    one_line_error(&run, "another ti-xla run is writing to");
    assert!(String::from_utf8_lossy(&run.stderr).contains("pid 4242 on testhost"));
    assert!(!out.join("learned_embeds.safetensors").exists());
    drop(held);
    ok(&train(&fixture("tiny-sd1"), &out, &[]));
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts a training run, waits until a stderr line contains `ready`, sends `signals` (e.g.
/// `["-TERM"]`) and returns the exit code and the stderr.
fn interrupt(out: &Path, extra: &[&str], ready: &str, signals: &[&str]) -> (Option<i32>, String) {
    let mut child = train_cmd(&fixture("tiny-sd1"), out, extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(ready) {
            break;
        }
    }
    for s in signals {
        Command::new("kill")
            .args([*s, pid.as_str()])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?} to stop",
        started.elapsed()
    );
    (status.code(), seen)
}

#[test]
fn interrupts_stop_at_once_before_training_and_checkpoint_during_it() {
    let dir = empty_dir("signals");
    // During compilation (a cache of its own, so the step compiles): exit 130, nothing written.
    let out = dir.join("compiling");
    let cache = dir.join("cache");
    let cache_flag = ["--cache-dir", cache.to_str().unwrap()];
    let (code, stderr) = interrupt(&out, &cache_flag, "compiling the training step", &["-INT"]);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!out.join("learned_embeds.safetensors").exists());
    assert!(!out.join("train_log.jsonl").exists());
    // SIGTERM during training: a checkpoint, then 130.
    let out = dir.join("training");
    let long = ["--max-train-steps", "1000000"];
    let (code, stderr) = interrupt(&out, &long, "step 10/", &["-TERM"]);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("checkpoint written to"), "{stderr}");
    let checkpoints: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{stderr}");
    // Two interrupts: out at once.
    let out = dir.join("twice");
    let (code, stderr) = interrupt(&out, &long, "step 10/", &["-INT", "-INT"]);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_resume_keeps_one_log_line_per_step_and_clears_stale_temporaries() {
    let dir = empty_dir("resume-log");
    let out = dir.join("out");
    let model = fixture("tiny-sd1");
    ok(&train(
        &model,
        &out,
        &["--max-train-steps", "6", "--checkpointing-steps", "3"],
    ));
    // A save killed mid-way by a process that no longer exists.
    let stale = out.join(".checkpoint-9.tmp-999999999");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("state.safetensors"), b"partial").unwrap();
    ok(&train(
        &model,
        &out,
        &[
            "--max-train-steps",
            "6",
            "--resume-from-checkpoint",
            "checkpoint-3",
        ],
    ));
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 5], "{log}");
    assert!(!stale.exists(), "the stale temporary folder is still there");
    let _ = std::fs::remove_dir_all(dir);
}
