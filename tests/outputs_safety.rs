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
    // TensorBoard's --logging-dir (an absolute one is not under --output-dir) either.
    let logs = model.join("logs");
    let run = train(
        &model,
        &dir.join("out"),
        &["--logging-dir", logs.to_str().unwrap()],
    );
    one_line_error(&run, "--logging-dir");
    assert_eq!(
        snapshot(&model),
        before,
        "the model changed (--logging-dir)"
    );
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

/// The checkpoint folder an interrupted run names in `checkpoint written to .../checkpoint-N`.
fn checkpoint_step(stderr: &str) -> usize {
    let at = stderr.find("checkpoint-").expect("a checkpoint named") + "checkpoint-".len();
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn log_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `snapshot` without the lock file (its text names the last holder).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = snapshot(dir);
    all.remove(Path::new(".ti-xla.lock"));
    all
}

#[test]
fn a_killed_overwrite_gives_the_earlier_run_back_and_its_own_files_are_known() {
    let dir = empty_dir("killed");
    let out = dir.join("out");
    let model = fixture("tiny-sd1");
    ok(&train(&model, &out, &[]));
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let earlier: BTreeMap<_, _> = files(&out)
        .into_iter()
        .filter(|(k, _)| !k.to_string_lossy().starts_with('.'))
        .collect();
    // Its replacement is killed (SIGKILL: no handler runs) before any checkpoint, with its
    // own log half written over the earlier run's name.
    let long = ["--overwrite", "--max-train-steps", "1000000"];
    let (code, stderr) = interrupt(&out, &long, "step 10/", &["-KILL"]);
    assert_eq!(code, None, "{stderr}");
    assert!(out.join("train_log.jsonl").exists(), "{stderr}");
    // The next run puts every file of the earlier run back as it was (the killed run's log
    // is ti-xla's own, so it gives way), then refuses to mix into it without --overwrite.
    let run = train(&model, &out, &[]);
    one_line_error(&run, "--overwrite");
    let now = files(&out);
    for (k, v) in &earlier {
        assert_eq!(now.get(k), Some(v), "{} is not as it was", k.display());
    }
    // With --overwrite it replaces them and keeps the user's file.
    ok(&train(
        &model,
        &out,
        &["--overwrite", "--max-train-steps", "2"],
    ));
    assert_eq!(log_steps(&out), [0, 1]);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_interrupted_overwrite_resumes_its_own_checkpoint_and_settings_are_checked_first() {
    let dir = empty_dir("overwrite-resume");
    let out = dir.join("out");
    let model = fixture("tiny-sd1");
    // An earlier run whose checkpoint is later than the one the replacing run will write.
    let earlier = ["--max-train-steps", "200", "--checkpointing-steps", "200"];
    ok(&train(&model, &out, &earlier));
    assert!(out.join("checkpoint-200").is_dir());
    // Its replacement is interrupted: a checkpoint, exit 130.
    let long = ["--overwrite", "--max-train-steps", "1000000"];
    let (code, stderr) = interrupt(&out, &long, "step 10/", &["-INT"]);
    assert_eq!(code, Some(130), "{stderr}");
    let step = checkpoint_step(&stderr);
    assert!((10..200).contains(&step), "{stderr}");
    let before = files(&out);
    // A fresh run now would give up one of the two runs: refused, saying how to go on.
    let run = train(&model, &out, &["--overwrite"]);
    one_line_error(&run, "--resume-from-checkpoint latest");
    assert_eq!(files(&out), before);
    // A resume with other settings is refused before anything compiles, and changes nothing.
    let resume = ["--resume-from-checkpoint", "latest"];
    let mut changed = resume.to_vec();
    changed.extend(["--seed", "7"]);
    let run = train(&model, &out, &changed);
    one_line_error(&run, "different settings");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("compiling"), "{stderr}");
    assert_eq!(files(&out), before);
    // The resume continues the interrupted run, not the earlier one it was replacing (whose
    // checkpoint-200 came back and was taken as the latest before).
    let total = (step + 2).to_string();
    let mut args = resume.to_vec();
    args.extend(["--max-train-steps", total.as_str()]);
    let run = train(&model, &out, &args);
    ok(&run);
    let expected: Vec<u64> = (0..step as u64 + 2).collect();
    assert_eq!(log_steps(&out), expected);
    assert!(
        !out.join("checkpoint-200").exists(),
        "the replaced run's checkpoint is back"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn generate(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["generate", "--pretrained-model-name-or-path"])
        .arg(fixture("tiny-sd1"))
        .args(["--prompt", "a photo of a cat", "--num-inference-steps", "2"])
        .args(["--num-samples", "1"])
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn generate_replaces_only_its_own_images_and_locks_its_folder() {
    let dir = empty_dir("generate");
    // The user's own images of the names generate writes: kept even with --overwrite.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("0000.png"), b"my picture").unwrap();
    std::fs::write(mine.join("grid.png"), b"my grid").unwrap();
    let before = files(&mine);
    let run = generate(&mine, &["--overwrite"]);
    one_line_error(&run, "was not written by ti-xla");
    assert_eq!(files(&mine), before);
    // A locked folder: refused, naming the holder.
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    let mut held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(locked.join(".ti-xla.lock"))
        .unwrap();
    held.try_lock().unwrap();
    held.write_all(b"pid 4343 on otherhost").unwrap();
    let run = generate(&locked, &[]);
    one_line_error(&run, "another ti-xla run is writing to");
    assert!(String::from_utf8_lossy(&run.stderr).contains("pid 4343 on otherhost"));
    assert!(!locked.join("0000.png").exists());
    drop(held);
    // Its own images are replaced with --overwrite.
    let own = dir.join("own");
    let tensors = dir.join("tensors.safetensors");
    ok(&generate(
        &own,
        &["--save-tensors", tensors.to_str().unwrap()],
    ));
    let first = std::fs::read(own.join("0000.png")).unwrap();
    ok(&generate(&own, &["--overwrite", "--seed", "7"]));
    assert_ne!(std::fs::read(own.join("0000.png")).unwrap(), first);
    // --save-tensors onto an input file (here --latents): refused, the input unchanged.
    let saved = std::fs::read(&tensors).unwrap();
    let path = tensors.to_str().unwrap();
    let run = generate(&dir.join("t"), &["--latents", path, "--save-tensors", path]);
    one_line_error(&run, "--save-tensors");
    assert_eq!(std::fs::read(&tensors).unwrap(), saved);
    let _ = std::fs::remove_dir_all(dir);
}

/// `from` copied into a Hugging Face cache laid out as `huggingface_hub` writes it: files in
/// `blobs/`, linked from `snapshots/<commit>/`; returns the repo folder and the snapshot.
fn hub_copy(from: &Path, cache: &Path, repo: &str) -> (PathBuf, PathBuf) {
    fn link(root: &Path, dir: &Path, blobs: &Path, snapshot: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if e.file_name() == "reference" {
                continue;
            }
            if path.is_dir() {
                link(root, &path, blobs, snapshot, n);
                continue;
            }
            *n += 1;
            let blob = blobs.join(format!("blob{n:04}"));
            std::fs::copy(&path, &blob).unwrap();
            let target = snapshot.join(path.strip_prefix(root).unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&blob, &target).unwrap();
        }
    }
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let (blobs, snapshot) = (
        repo_dir.join("blobs"),
        repo_dir.join("snapshots").join(commit),
    );
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    link(from, from, &blobs, &snapshot, &mut 0);
    (repo_dir, snapshot)
}

#[test]
fn an_output_folder_in_or_around_a_hub_snapshot_is_refused() {
    let dir = empty_dir("hub-overlap");
    let cache = dir.join("hub");
    let (repo_dir, snapshot) = hub_copy(&fixture("tiny-sd1"), &cache, "me/tiny");
    let before = snapshot_of_blobs(&repo_dir);
    for (out, how) in [
        (snapshot.clone(), "is the model folder"),
        (snapshot.join("unet"), "lies inside the model folder"),
        (repo_dir.clone(), "holds the model folder"),
    ] {
        let mut cmd = train_cmd(Path::new("me/tiny"), &out, &["--save-as-full-pipeline"]);
        for key in [
            "HF_HOME",
            "HUGGINGFACE_HUB_CACHE",
            "HF_ENDPOINT",
            "XDG_CACHE_HOME",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("HF_HUB_CACHE", &cache).env("HF_HUB_OFFLINE", "1");
        let run = cmd.output().unwrap();
        one_line_error(&run, how);
        assert_eq!(
            snapshot_of_blobs(&repo_dir),
            before,
            "the cache changed ({how})"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Every blob of a cached repo with its bytes, and the snapshot's links.
fn snapshot_of_blobs(repo_dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<PathBuf>) {
    let mut links = Vec::new();
    let mut stack = vec![repo_dir.join("snapshots")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                links.push(p);
            }
        }
    }
    links.sort();
    (snapshot(&repo_dir.join("blobs")), links)
}
