//! The Cloud TPU VM scripts in scripts/tpu-vm/, run through bash without gcloud: each dry run
//! prints exactly the expected commands (with nothing but bash on PATH); a real run executes
//! the same commands (against a stub gcloud); the commands sent over ssh do what they should
//! when a POSIX shell runs them (stub tmux and ti-xla in a fake home); --help, argument errors
//! and the gcloud checks; shellcheck (which must be installed: `apt-get install shellcheck`).
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const SCRIPTS: [&str; 7] = [
    "create.sh",
    "setup.sh",
    "upload-images.sh",
    "train.sh",
    "generate.sh",
    "download.sh",
    "delete.sh",
];

/// The first executable called `name` on this process's PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.is_file()
                && p.metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
}

fn bash_path() -> PathBuf {
    which("bash").expect("bash is needed to test scripts/tpu-vm")
}

fn script(name: &str) -> PathBuf {
    Path::new(ROOT).join("scripts/tpu-vm").join(name)
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("tpu_vm_scripts")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bash scripts/tpu-vm/<name> args...` with PATH set to `path`, in `cwd`, stdin empty,
/// none of the TI_XLA_TPU_* defaults unless given in `env`.
fn run_script(name: &str, args: &[&str], path: &str, cwd: &Path, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(bash_path());
    cmd.arg(script(name))
        .args(args)
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("TI_XLA_TPU_NAME")
        .env_remove("TI_XLA_TPU_ZONE")
        .env_remove("TI_XLA_TPU_PROJECT")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// An empty folder as the whole PATH: nothing but bash's builtins can run.
fn empty_path() -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tpu_vm_scripts_empty_path");
    fs::create_dir_all(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// The dry run of `name args` (in `cwd`, with no program on PATH) must succeed, print nothing
/// on stderr and print exactly `expected` (one command per line).
fn assert_dry_run(name: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)], expected: &[&str]) {
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(args);
    let out = run_script(name, &all, &empty_path(), cwd, env);
    assert_eq!(out.code, 0, "{name} {args:?}: {out:?}");
    assert_eq!(out.stderr, "", "{name} {args:?}");
    let expected: String = expected.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(out.stdout, expected, "{name} {args:?}");
}

// The commands the scripts send over ssh, as printed (quoted once more for the local shell).
const PRELUDE: &str = r#"set -eu; [ -x ~/ti-xla/target/release/ti-xla ] || { echo "error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first" >&2; exit 1; }"#;

const SETUP_REMOTE: &str = r#"set -eu; need=; command -v cc >/dev/null 2>&1 || need="$need build-essential"; python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"; command -v tmux >/dev/null 2>&1 || need="$need tmux"; if [ -n "$need" ]; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $need; fi; python3 -m pip install --help 2>/dev/null | grep -q -- --root-user-action || python3 -m pip install --user -q --upgrade pip; [ -x ~/.cargo/bin/cargo ] || { curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs -o ~/rustup-init.sh && sh ~/rustup-init.sh -y --profile minimal --default-toolchain stable && rm ~/rustup-init.sh; }; . ~/.cargo/env; mkdir -p ~/ti-xla; cd ~/ti-xla; find . -mindepth 1 -maxdepth 1 ! -name target ! -name .pjrt -exec rm -rf {} +; tar -xzf ~/ti-xla-src.tar.gz; rm ~/ti-xla-src.tar.gz; cargo build --release --locked --bin ti-xla; scripts/install-plugin.sh tpu; mkdir -p ~/.local/bin; ln -sf ~/ti-xla/target/release/ti-xla ~/.local/bin/ti-xla; target/release/ti-xla devices --device tpu"#;

#[test]
fn create_dry_run() {
    let cwd = Path::new(ROOT);
    assert_dry_run(
        "create.sh",
        &[],
        cwd,
        &[],
        &["gcloud compute tpus tpu-vm create ti-xla --zone=us-central2-b --accelerator-type=v4-8 --version=tpu-ubuntu2204-base"],
    );
    assert_dry_run(
        "create.sh",
        &[
            "--name",
            "my-tpu",
            "--zone",
            "europe-west4-a",
            "--project",
            "my-project",
            "--accelerator-type",
            "v5litepod-8",
            "--spot",
        ],
        cwd,
        &[],
        &["gcloud compute tpus tpu-vm create my-tpu --zone=europe-west4-a --project=my-project --accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite --spot"],
    );
    assert_dry_run(
        "create.sh",
        &["--accelerator-type=v3-8", "--version=tpu-vm-base"],
        cwd,
        &[],
        &["gcloud compute tpus tpu-vm create ti-xla --zone=us-central2-b --accelerator-type=v3-8 --version=tpu-vm-base"],
    );
    for (ty, version) in [
        ("v6e-8", "v2-alpha-tpuv6e"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v2-8", "tpu-ubuntu2204-base"),
    ] {
        let flag = format!("--accelerator-type={ty}");
        assert_dry_run(
            "create.sh",
            &[&flag],
            cwd,
            &[],
            &[&format!("gcloud compute tpus tpu-vm create ti-xla --zone=us-central2-b --accelerator-type={ty} --version={version}")],
        );
    }
}

#[test]
fn setup_dry_run() {
    let expected = [
        format!("mkdir -p {ROOT}/target/tpu-vm"),
        format!("git -C {ROOT} archive --format=tar.gz --output={ROOT}/target/tpu-vm/ti-xla-src.tar.gz HEAD"),
        format!("gcloud compute tpus tpu-vm scp {ROOT}/target/tpu-vm/ti-xla-src.tar.gz ti-xla:ti-xla-src.tar.gz --zone=us-central2-b --project=my-project"),
        format!(
            "gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --project=my-project --command '{}'",
            SETUP_REMOTE
        ),
    ];
    // ROOT is a plain path in CI; the expected lines assume it needs no quoting.
    assert!(
        !ROOT.contains(|c: char| c.is_whitespace() || c == '\''),
        "{ROOT}"
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    // From another folder: the script finds the repository from its own path.
    let elsewhere = scratch("setup_dry_run");
    assert_dry_run(
        "setup.sh",
        &["--project", "my-project"],
        &elsewhere,
        &[],
        &expected,
    );
}

#[test]
fn upload_images_dry_run() {
    let cwd = scratch("upload_images_dry_run");
    fs::create_dir_all(cwd.join("cat-toy")).unwrap();
    assert_dry_run(
        "upload-images.sh",
        &["cat-toy/"],
        &cwd,
        &[],
        &[
            "gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --command 'set -eu; rm -rf ~/ti-xla-data/cat-toy; mkdir -p ~/ti-xla-data'",
            "gcloud compute tpus tpu-vm scp cat-toy ti-xla:ti-xla-data/cat-toy --zone=us-central2-b --recurse",
        ],
    );
    assert_dry_run(
        "upload-images.sh",
        &["--as", "toy", "--zone", "europe-west4-a", "cat-toy"],
        &cwd,
        &[],
        &[
            "gcloud compute tpus tpu-vm ssh ti-xla --zone=europe-west4-a --command 'set -eu; rm -rf ~/ti-xla-data/toy; mkdir -p ~/ti-xla-data'",
            "gcloud compute tpus tpu-vm scp cat-toy ti-xla:ti-xla-data/toy --zone=europe-west4-a --recurse",
        ],
    );
}

/// The printed ssh command that starts `ti-xla train` for data `cat-toy`, run `run`, with the
/// user's flags as quoted for the remote shell (before the outer quoting).
fn train_start_line(run: &str, flags: &str) -> String {
    let remote = format!(
        r#"{PRELUDE}; [ -d ~/ti-xla-data/cat-toy ] || {{ echo "error: no ~/ti-xla-data/cat-toy on this VM; upload it with scripts/tpu-vm/upload-images.sh" >&2; exit 1; }}; mkdir -p ~/ti-xla-runs/{run}; set -- ~/ti-xla/target/release/ti-xla train --device tpu --train-data-dir ~/ti-xla-data/cat-toy --output-dir ~/ti-xla-runs/{run}/output {flags}; job='"$0" "$@" >>~/ti-xla-runs/{run}/train.log 2>&1; echo "ti-xla train exited with status $?" >>~/ti-xla-runs/{run}/train.log'; if command -v tmux >/dev/null 2>&1; then if tmux has-session -t =ti-xla-{run} 2>/dev/null; then echo "error: run {run} is still running (train.sh --run {run} --attach follows it)" >&2; exit 1; fi; tmux new-session -d -s ti-xla-{run} sh -c "$job" "$@"; else nohup sh -c "$job" "$@" </dev/null >/dev/null 2>&1 & fi"#
    );
    format!(
        "gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --command '{}'",
        remote.replace('\'', r"'\''")
    )
}

#[test]
fn train_dry_run() {
    let cwd = Path::new(ROOT);
    let start = train_start_line(
        "cat-toy",
        r"--placeholder-token '<cat-toy>' --initializer-token toy --validation-prompt 'it'\''s a <cat-toy>'",
    );
    // The same line written out in full, as a user sees it.
    assert_eq!(
        start,
        r#"gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --command 'set -eu; [ -x ~/ti-xla/target/release/ti-xla ] || { echo "error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first" >&2; exit 1; }; [ -d ~/ti-xla-data/cat-toy ] || { echo "error: no ~/ti-xla-data/cat-toy on this VM; upload it with scripts/tpu-vm/upload-images.sh" >&2; exit 1; }; mkdir -p ~/ti-xla-runs/cat-toy; set -- ~/ti-xla/target/release/ti-xla train --device tpu --train-data-dir ~/ti-xla-data/cat-toy --output-dir ~/ti-xla-runs/cat-toy/output --placeholder-token '\''<cat-toy>'\'' --initializer-token toy --validation-prompt '\''it'\''\'\'''\''s a <cat-toy>'\''; job='\''"$0" "$@" >>~/ti-xla-runs/cat-toy/train.log 2>&1; echo "ti-xla train exited with status $?" >>~/ti-xla-runs/cat-toy/train.log'\''; if command -v tmux >/dev/null 2>&1; then if tmux has-session -t =ti-xla-cat-toy 2>/dev/null; then echo "error: run cat-toy is still running (train.sh --run cat-toy --attach follows it)" >&2; exit 1; fi; tmux new-session -d -s ti-xla-cat-toy sh -c "$job" "$@"; else nohup sh -c "$job" "$@" </dev/null >/dev/null 2>&1 & fi'"#
    );
    assert_dry_run(
        "train.sh",
        &[
            "--data",
            "cat-toy",
            "--",
            "--placeholder-token",
            "<cat-toy>",
            "--initializer-token",
            "toy",
            "--validation-prompt",
            "it's a <cat-toy>",
        ],
        cwd,
        &[],
        &[&start],
    );
    let attach = "gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --ssh-flag=-t --command 'tail -n +1 -F ~/ti-xla-runs/cat-toy/train.log'";
    assert_dry_run(
        "train.sh",
        &["--run", "cat-toy", "--attach"],
        cwd,
        &[],
        &[attach],
    );
    // Start and follow, under another run name.
    let start2 = train_start_line("second", "--max-train-steps 10");
    let attach2 = "gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --ssh-flag=-t --command 'tail -n +1 -F ~/ti-xla-runs/second/train.log'";
    assert_dry_run(
        "train.sh",
        &[
            "--data=cat-toy",
            "--run=second",
            "--attach",
            "--",
            "--max-train-steps",
            "10",
        ],
        cwd,
        &[],
        &[&start2, attach2],
    );
}

#[test]
fn generate_dry_run() {
    let cwd = Path::new(ROOT);
    assert_dry_run(
        "generate.sh",
        &[
            "--run",
            "cat-toy",
            "--",
            "--prompt",
            "a photo of <cat-toy>",
            "--seed",
            "1",
        ],
        cwd,
        &[],
        &[
            r#"gcloud compute tpus tpu-vm ssh ti-xla --zone=us-central2-b --command 'set -eu; [ -x ~/ti-xla/target/release/ti-xla ] || { echo "error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first" >&2; exit 1; }; n=$(~/ti-xla/target/release/ti-xla devices --device tpu --count); ~/ti-xla/target/release/ti-xla generate --device tpu --num-samples "$n" --learned-embeds ~/ti-xla-runs/cat-toy/output/learned_embeds.safetensors --output-dir ~/ti-xla-runs/cat-toy/samples --prompt '\''a photo of <cat-toy>'\'' --seed 1'"#,
        ],
    );
    // The user's --num-samples (or its snake_case alias) and --output-dir replace the script's.
    assert_dry_run(
        "generate.sh",
        &[
            "--name",
            "my-tpu",
            "--run",
            "cat-toy",
            "--",
            "--num_samples=2",
            "--output-dir",
            "samples",
            "--prompt",
            "x",
        ],
        cwd,
        &[],
        &[
            r#"gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --command 'set -eu; [ -x ~/ti-xla/target/release/ti-xla ] || { echo "error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first" >&2; exit 1; }; ~/ti-xla/target/release/ti-xla generate --device tpu --learned-embeds ~/ti-xla-runs/cat-toy/output/learned_embeds.safetensors --num_samples=2 --output-dir samples --prompt x'"#,
        ],
    );
}

#[test]
fn download_and_delete_dry_runs() {
    let cwd = Path::new(ROOT);
    assert_dry_run(
        "download.sh",
        &["--run", "cat-toy"],
        cwd,
        &[],
        &[
            "mkdir -p ti-xla-runs",
            "gcloud compute tpus tpu-vm scp ti-xla:ti-xla-runs/cat-toy ti-xla-runs --zone=us-central2-b --recurse",
        ],
    );
    assert_dry_run(
        "download.sh",
        &["--run", "cat-toy", "--to", "my runs"],
        cwd,
        &[],
        &[
            "mkdir -p 'my runs'",
            "gcloud compute tpus tpu-vm scp ti-xla:ti-xla-runs/cat-toy 'my runs' --zone=us-central2-b --recurse",
        ],
    );
    assert_dry_run(
        "delete.sh",
        &[],
        cwd,
        &[],
        &["gcloud compute tpus tpu-vm delete ti-xla --zone=us-central2-b --quiet"],
    );
    // The VM flags' defaults from the environment.
    assert_dry_run(
        "delete.sh",
        &[],
        cwd,
        &[
            ("TI_XLA_TPU_NAME", "other"),
            ("TI_XLA_TPU_ZONE", "europe-west4-a"),
            ("TI_XLA_TPU_PROJECT", "my-project"),
        ],
        &["gcloud compute tpus tpu-vm delete other --zone=europe-west4-a --project=my-project --quiet"],
    );
}

#[test]
fn scripts_are_strict_and_have_help() {
    for name in SCRIPTS {
        let text = fs::read_to_string(script(name)).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{name}");
        assert!(text.contains("\nset -euo pipefail\n"), "{name}");
        let mode = fs::metadata(script(name)).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{name} is not executable");
        for flag in ["--help", "-h"] {
            let out = run_script(name, &[flag], &empty_path(), Path::new(ROOT), &[]);
            assert_eq!(out.code, 0, "{name} {flag}: {out:?}");
            assert_eq!(out.stderr, "", "{name} {flag}");
            assert!(
                out.stdout.starts_with(&format!("usage: {name} ")),
                "{name}: {}",
                out.stdout
            );
            for common in [
                "--name NAME",
                "--zone ZONE",
                "--project PROJECT",
                "--dry-run",
            ] {
                assert!(out.stdout.contains(common), "{name} --help lacks {common}");
            }
        }
    }
}

#[test]
fn argument_errors_are_one_line() {
    let cwd = scratch("argument_errors");
    fs::create_dir_all(cwd.join("my photos")).unwrap();
    let cases: [(&str, &[&str], &str); 13] = [
        ("upload-images.sh", &[], "upload-images.sh: error: missing the image folder: upload-images.sh [flags] DIR (see upload-images.sh --help)"),
        ("upload-images.sh", &["a", "b"], "upload-images.sh: error: unexpected argument 'b' (see upload-images.sh --help)"),
        ("upload-images.sh", &["nowhere"], "upload-images.sh: error: 'nowhere' is not a folder (see upload-images.sh --help)"),
        ("upload-images.sh", &["my photos"], "upload-images.sh: error: the data name (--as) 'my photos' may hold only letters, digits, '_' and '-' (see upload-images.sh --help)"),
        ("train.sh", &["--", "--seed", "1"], "train.sh: error: missing --data NAME (the folder uploaded by upload-images.sh; or --run RUN --attach to follow a run) (see train.sh --help)"),
        ("train.sh", &["--data", "cat", "--", "--output_dir=x"], "train.sh: error: --output-dir is set by train.sh; leave it out of the ti-xla flags (see train.sh --help)"),
        ("generate.sh", &[], "generate.sh: error: missing the ti-xla generate flags: generate.sh [flags] [--run RUN] -- --prompt 'a photo of <token>' ... (see generate.sh --help)"),
        ("download.sh", &["--to", "x"], "download.sh: error: missing --run RUN (the run to download, as given to train.sh) (see download.sh --help)"),
        ("create.sh", &["--zone"], "create.sh: error: --zone needs a value (see create.sh --help)"),
        ("create.sh", &["--accelerator-type", "v4-32"], "create.sh: error: --accelerator-type v4-32 spans several hosts; ti-xla runs on one host: use a type ending in -8 or less (e.g. v4-8) (see create.sh --help)"),
        ("create.sh", &["--accelerator-type", "tpu7x-8"], "create.sh: error: no default --version for tpu7x-8; pass one (gcloud compute tpus tpu-vm versions list --zone=us-central2-b) (see create.sh --help)"),
        ("setup.sh", &["--name", "My_TPU"], "setup.sh: error: --name 'My_TPU' is not a TPU VM name (lowercase letters, digits and '-', starting with a letter) (see setup.sh --help)"),
        ("delete.sh", &["--force"], "delete.sh: error: unknown flag --force (see delete.sh --help)"),
    ];
    for (name, args, message) in cases {
        // With and without --dry-run: arguments are checked before anything runs.
        for dry in [false, true] {
            let mut all: Vec<&str> = args.to_vec();
            if dry {
                all.insert(0, "--dry-run");
            }
            let out = run_script(name, &all, &empty_path(), &cwd, &[]);
            assert_eq!(out.code, 2, "{name} {all:?}: {out:?}");
            assert_eq!(out.stdout, "", "{name} {all:?}");
            assert_eq!(out.stderr, format!("{message}\n"), "{name} {all:?}");
        }
    }
}

/// A folder with a stub `gcloud` (and `tmux`): `auth list` answers `account` (nothing if
/// empty); every other call is appended to $STUB_LOG, quoted like a dry run prints it; with
/// $STUB_EXEC set, an ssh call runs its --command with `sh -c` here.
fn stub_bin(dir: &Path, account: &str) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let bash = bash_path();
    let bash = bash.display();
    let common = script("common.sh");
    let common = common.display();
    write_executable(
        &bin.join("gcloud"),
        &format!(
            r#"#!{bash}
if [[ $1 == auth ]]; then
    [[ -z "{account}" ]] || echo "{account}"
    exit 0
fi
source "{common}"
quote_words gcloud "$@"
printf '%s\n' "$QUOTED" >>"$STUB_LOG"
if [[ -n ${{STUB_EXEC:-}} && $4 == ssh ]]; then
    while [[ $# -gt 0 ]]; do
        if [[ $1 == --command ]]; then exec sh -c "$2"; fi
        shift
    done
fi
"#
        ),
    );
    // tmux: no session exists; new-session runs its command in the foreground.
    write_executable(
        &bin.join("tmux"),
        &format!(
            r#"#!{bash}
case $1 in
    has-session) exit 1 ;;
    new-session)
        shift
        [[ $1 == -d && $2 == -s ]] || exit 2
        echo "$3" >"$HOME/tmux-session"
        shift 3
        exec "$@"
        ;;
esac
exit 2
"#
        ),
    );
    bin
}

#[test]
fn gcloud_missing_or_logged_out() {
    let dir = scratch("gcloud_checks");
    let out = run_script("delete.sh", &["--yes"], &empty_path(), &dir, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "delete.sh: error: gcloud (the Google Cloud CLI) is not installed or not on PATH: install it from https://cloud.google.com/sdk/docs/install (--dry-run shows the commands without it)\n"
    );

    let bin = stub_bin(&dir, "");
    let log = dir.join("log");
    for name in ["create.sh", "setup.sh", "delete.sh"] {
        let out = run_script(
            name,
            &[],
            bin.to_str().unwrap(),
            &dir,
            &[("STUB_LOG", log.to_str().unwrap())],
        );
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            format!(
                "{name}: error: no Google Cloud account is logged in: run 'gcloud auth login'\n"
            )
        );
    }
    assert!(
        !log.exists(),
        "nothing may run when no account is logged in"
    );
}

/// PATH with the stub folder first, then this process's PATH.
fn stub_path(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn real_runs_execute_what_dry_runs_print() {
    let dir = scratch("real_runs");
    let bin = stub_bin(&dir, "someone@example.com");
    let path = stub_path(&bin);
    fs::create_dir_all(dir.join("cat-toy")).unwrap();
    let to = dir.join("downloads");
    let to = to.to_str().unwrap();
    let mut cases: Vec<(&str, Vec<&str>)> = vec![
        ("create.sh", vec!["--spot", "--project", "my-project"]),
        ("upload-images.sh", vec!["cat-toy"]),
        (
            "train.sh",
            vec![
                "--data",
                "cat-toy",
                "--attach",
                "--",
                "--placeholder-token",
                "<cat-toy>",
            ],
        ),
        (
            "generate.sh",
            vec!["--run", "cat-toy", "--", "--prompt", "a <cat-toy>"],
        ),
        ("download.sh", vec!["--run", "cat-toy", "--to", to]),
        ("delete.sh", vec!["--yes"]),
    ];
    // setup.sh archives HEAD with git (into target/tpu-vm/): only in a git checkout.
    let git_checkout = Path::new(ROOT).join(".git").exists() && which("git").is_some();
    if git_checkout {
        cases.push(("setup.sh", vec![]));
    }
    for (name, args) in cases {
        let log = dir.join(format!("{name}.log"));
        let env = [("STUB_LOG", log.to_str().unwrap())];
        let out = run_script(name, &args, &path, &dir, &env);
        assert_eq!(out.code, 0, "{name} {args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{name}: the commands' own output only");
        let mut dry_args = vec!["--dry-run"];
        dry_args.extend(args.iter().copied());
        let dry = run_script(name, &dry_args, &path, &dir, &env);
        assert_eq!(dry.code, 0, "{name}: {dry:?}");
        // Every printed line is shown on stderr before it runs, and the gcloud ones reached
        // gcloud with exactly these arguments.
        for line in dry.stdout.lines() {
            assert!(
                out.stderr.contains(&format!("+ {line}\n")),
                "{name}: {line}\n{}",
                out.stderr
            );
        }
        let gcloud_lines: String = dry
            .stdout
            .lines()
            .filter(|l| l.starts_with("gcloud "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(fs::read_to_string(&log).unwrap(), gcloud_lines, "{name}");
    }
    assert!(Path::new(to).is_dir(), "download.sh makes the --to folder");
    if git_checkout {
        let archive = Path::new(ROOT).join("target/tpu-vm/ti-xla-src.tar.gz");
        assert!(fs::metadata(archive).unwrap().len() > 0);
    } else {
        println!("not a git checkout: setup.sh's real run was not tested");
    }

    // delete.sh asks first; with no terminal to ask on, it refuses without --yes.
    let log = dir.join("delete-no.log");
    let out = run_script(
        "delete.sh",
        &[],
        &path,
        &dir,
        &[("STUB_LOG", log.to_str().unwrap())],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "delete.sh: error: not deleting ti-xla without confirmation: pass --yes\n"
    );
    assert!(!log.exists());
}

/// Waits until `path` exists and holds a whole last line.
fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The commands sent over ssh, run by `sh` in a fake home with a stub ti-xla that records its
/// arguments: user flags arrive unchanged whatever their quotes, paths expand on the VM.
#[test]
fn remote_commands_do_what_they_say() {
    let dir = scratch("remote");
    let home = dir.join("home");
    let release = home.join("ti-xla/target/release");
    fs::create_dir_all(&release).unwrap();
    fs::create_dir_all(home.join("ti-xla-data/cat-toy")).unwrap();
    fs::create_dir_all(home.join("ti-xla-data/old/sub")).unwrap();
    write_executable(
        &release.join("ti-xla"),
        "#!/bin/sh\nif [ \"$1\" = devices ]; then echo 4; exit 0; fi\n\
         printf '%s\\n' \"$@\" >\"$HOME/argv-$1.partial\"\nmv \"$HOME/argv-$1.partial\" \"$HOME/argv-$1\"\n",
    );
    let bin = stub_bin(&dir, "someone@example.com");
    let h = home.to_str().unwrap();
    let log = dir.join("gcloud.log");
    let env = [
        ("HOME", h),
        ("STUB_LOG", log.to_str().unwrap()),
        ("STUB_EXEC", "1"),
    ];
    let tricky = r#"it's a "<cat-toy>" $HOME `x` \n"#;

    // train.sh through tmux (the stub runs it in the foreground).
    let path = stub_path(&bin);
    let args = [
        "--data",
        "cat-toy",
        "--",
        "--placeholder-token",
        "<cat-toy>",
        "--validation-prompt",
        tricky,
    ];
    let out = run_script("train.sh", &args, &path, &dir, &env);
    assert_eq!(out.code, 0, "{out:?}");
    let expected_argv = format!(
        "train\n--device\ntpu\n--train-data-dir\n{h}/ti-xla-data/cat-toy\n--output-dir\n\
         {h}/ti-xla-runs/cat-toy/output\n--placeholder-token\n<cat-toy>\n--validation-prompt\n{tricky}\n"
    );
    assert_eq!(
        fs::read_to_string(home.join("argv-train")).unwrap(),
        expected_argv
    );
    assert_eq!(
        fs::read_to_string(home.join("tmux-session")).unwrap(),
        "ti-xla-cat-toy\n"
    );
    assert_eq!(
        fs::read_to_string(home.join("ti-xla-runs/cat-toy/train.log")).unwrap(),
        "ti-xla train exited with status 0\n"
    );

    // Without tmux: nohup in the background. PATH holds only the tools that path needs.
    let no_tmux = dir.join("no-tmux");
    fs::create_dir_all(&no_tmux).unwrap();
    for tool in ["sh", "mkdir", "nohup", "mv", "printf"] {
        let target = which(tool).unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(target, no_tmux.join(tool)).unwrap();
    }
    fs::copy(bin.join("gcloud"), no_tmux.join("gcloud")).unwrap();
    fs::remove_file(home.join("argv-train")).unwrap();
    let args = ["--data", "cat-toy", "--run", "run2", "--", "--seed", "7"];
    let out = run_script("train.sh", &args, no_tmux.to_str().unwrap(), &dir, &env);
    assert_eq!(out.code, 0, "{out:?}");
    let argv = wait_for_file(&home.join("argv-train"));
    assert_eq!(
        argv,
        format!(
            "train\n--device\ntpu\n--train-data-dir\n{h}/ti-xla-data/cat-toy\n--output-dir\n\
             {h}/ti-xla-runs/run2/output\n--seed\n7\n"
        )
    );
    let train_log = home.join("ti-xla-runs/run2/train.log");
    assert_eq!(
        wait_for_file(&train_log),
        "ti-xla train exited with status 0\n"
    );

    // Missing data on the VM: one error line from the VM, non-zero exit.
    let args = ["--data", "nothing", "--", "--seed", "7"];
    let out = run_script("train.sh", &args, &path, &dir, &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.ends_with(
        "error: no ~/ti-xla-data/nothing on this VM; upload it with scripts/tpu-vm/upload-images.sh\n"
    ));

    // generate.sh: one sample per device (the stub has 4).
    let args = ["--run", "cat-toy", "--", "--prompt", tricky];
    let out = run_script("generate.sh", &args, &path, &dir, &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        fs::read_to_string(home.join("argv-generate")).unwrap(),
        format!(
            "generate\n--device\ntpu\n--num-samples\n4\n--learned-embeds\n\
             {h}/ti-xla-runs/cat-toy/output/learned_embeds.safetensors\n--output-dir\n\
             {h}/ti-xla-runs/cat-toy/samples\n--prompt\n{tricky}\n"
        )
    );

    // upload-images.sh replaces an earlier upload of the same name.
    fs::create_dir_all(dir.join("old")).unwrap();
    let out = run_script("upload-images.sh", &["old"], &path, &dir, &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(home.join("ti-xla-data").is_dir());
    assert!(!home.join("ti-xla-data/old").exists());

    // Without a build on the VM, the commands say to run setup.sh.
    fs::remove_file(release.join("ti-xla")).unwrap();
    let out = run_script("generate.sh", &["--", "--prompt", "x"], &path, &dir, &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out
        .stderr
        .ends_with("error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first\n"));
}

#[test]
fn shellcheck_is_clean() {
    let shellcheck = which("shellcheck").unwrap_or_else(|| {
        panic!(
            "shellcheck is not on PATH, so the scripts in scripts/tpu-vm cannot be checked: \
             install it (`apt-get install shellcheck` on Debian/Ubuntu; .ci/run does this)"
        )
    });
    let mut files: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("scripts/tpu-vm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    files.sort();
    assert_eq!(files.len(), SCRIPTS.len() + 1, "{files:?}");
    let out = Command::new(shellcheck)
        .arg("-x")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn create_check_compiles_for_the_type_s_topology_before_creating() {
    let cwd = Path::new(ROOT);
    let bin = format!(
        "{}/../../target/release/ti-xla",
        script("create.sh").parent().unwrap().display()
    );
    for (ty, topology, version) in [
        ("v4-8", "v4:2x2x1", "tpu-ubuntu2204-base"),
        ("v5litepod-8", "v5e:2x4", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v5p:2x2x1", "v2-alpha-tpuv5"),
        ("v6e-8", "v6e:2x4", "v2-alpha-tpuv6e"),
    ] {
        let flag = format!("--accelerator-type={ty}");
        assert_dry_run(
            "create.sh",
            &[&flag, "--check", "--", "--model", "m", "--placeholder-token", "<t>"],
            cwd,
            &[],
            &[
                &format!("{bin} train --device tpu --compile-only --topology {topology} --model m --placeholder-token '<t>'"),
                &format!("gcloud compute tpus tpu-vm create ti-xla --zone=us-central2-b --accelerator-type={ty} --version={version}"),
            ],
        );
    }
    let out = run_script(
        "create.sh",
        &["--dry-run", "--check"],
        &empty_path(),
        cwd,
        &[],
    );
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "create.sh: error: --check needs the ti-xla train flags after -- (see create.sh --help)\n"
    );
}
