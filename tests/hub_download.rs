//! Models by Hub repo id, downloaded from a stand-in for the Hugging Face Hub on 127.0.0.1
//! that answers what hf-hub asks (the file list `/api/models/<id>/revision/<rev>`, the range
//! probe and ranged downloads of `/<id>/resolve/<rev>/<file>` with x-repo-commit and etag or
//! x-linked-etag, LFS files redirected to a `/cdn/` path) from `tests/fixtures/tiny-sd1`.
//!
//! The environment (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, HF_TOKEN) is only ever set for child
//! processes: the `ti-xla` binary, or this test binary running [`child_opens_a_model`] alone.

mod fixtures_path;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use fixtures_path::fixture;
use ti_xla::io::weights::{component_files, WeightFiles};
use ti_xla::model::folder::ModelFolder;
use ti_xla::model::full_pipeline::{save_full_pipeline, LearnedTokens};

const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";
const TOKEN: &str = "hf_test_token";
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

/// The files ti-xla needs of the tiny SD1 fixture (its `reference/` is served but not needed).
const NEEDED: [&str; 12] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    UNET,
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The served model: tests/fixtures/tiny-sd1.
fn tiny_sd1_dir() -> PathBuf {
    fixture("tiny-sd1")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hub_download")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// The Hub stand-in.

#[derive(Clone, Default)]
struct FakeRepo {
    files: BTreeMap<String, Vec<u8>>,
    /// branch or tag -> commit
    revisions: BTreeMap<String, String>,
    /// Files are served only with this bearer token (a gated repo); the file list is public.
    token: Option<String>,
    /// A file whose size the file list gives one byte too large.
    misreported: Option<String>,
}

impl FakeRepo {
    fn tiny_sd1() -> Self {
        let mut files = BTreeMap::new();
        fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                    files.insert(rel.to_string(), std::fs::read(&path).unwrap());
                }
            }
        }
        walk(&tiny_sd1_dir(), &tiny_sd1_dir(), &mut files);
        let revisions = [("main", MAIN), ("v1.0", V1)]
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .into();
        FakeRepo {
            files,
            revisions,
            token: None,
            misreported: None,
        }
    }

    fn rename(mut self, from: &str, to: &str) -> Self {
        let bytes = self.files.remove(from).unwrap();
        self.files.insert(to.to_string(), bytes);
        self
    }

    fn commit(&self, revision: &str) -> Option<&str> {
        self.revisions
            .iter()
            .find(|(r, c)| *r == revision || *c == revision)
            .map(|(_, c)| c.as_str())
    }
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

/// A stable hex digest of `bytes`, `len` digits long (a stand-in for git and LFS ids).
fn digest(bytes: &[u8], len: usize) -> String {
    let mut out = String::new();
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    while out.len() < len {
        let mut h = seed;
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        seed = seed.wrapping_add(1);
    }
    out.truncate(len);
    out
}

fn blob_id(name: &str, bytes: &[u8]) -> String {
    digest(bytes, if is_lfs(name) { 64 } else { 40 })
}

struct Hub {
    repos: BTreeMap<String, FakeRepo>,
    /// (file, times): bodies of that file (not the one-byte probe) are cut at half that often.
    cut: Mutex<Option<(String, usize)>>,
    /// "PATH RANGE" of every request, in order.
    log: Mutex<Vec<String>>,
}

struct Server {
    url: String,
    hub: Arc<Hub>,
}

impl Server {
    fn start(repos: &[(&str, FakeRepo)]) -> Server {
        let hub = Arc::new(Hub {
            repos: repos
                .iter()
                .map(|(id, r)| (id.to_string(), r.clone()))
                .collect(),
            cut: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (h, u) = (hub.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, u) = (h.clone(), u.clone());
                std::thread::spawn(move || {
                    let _ = serve(&h, &u, stream);
                });
            }
        });
        Server { url, hub }
    }

    fn cut(&self, file: &str, times: usize) {
        *self.hub.cut.lock().unwrap() = Some((file.to_string(), times));
    }

    fn requests(&self) -> Vec<String> {
        self.hub.log.lock().unwrap().clone()
    }
}

/// An address where nothing listens.
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (a cut connection).
    send: Option<usize>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            send: None,
        }
    }

    fn error(status: u16, code: &str) -> Reply {
        Reply::new(status, format!("{{\"error\":\"{code}\"}}")).header("X-Error-Code", code)
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn serve(hub: &Hub, url: &str, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap().to_string();
    let range = headers.get("range").cloned();
    hub.log
        .lock()
        .unwrap()
        .push(format!("{path} {}", range.as_deref().unwrap_or("-")));
    let reply = route(
        hub,
        url,
        &path,
        range.as_deref(),
        headers.get("authorization"),
    );
    respond(stream, reply)
}

fn respond(mut stream: TcpStream, reply: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    let send = reply.send.unwrap_or(reply.body.len());
    stream.write_all(&reply.body[..send])?;
    stream.flush()
}

fn route(hub: &Hub, url: &str, path: &str, range: Option<&str>, auth: Option<&String>) -> Reply {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/models/<org>/<name>/revision/<rev>
    if parts.len() == 6 && parts[0] == "api" && parts[1] == "models" && parts[4] == "revision" {
        let Some(repo) = hub.repos.get(&format!("{}/{}", parts[2], parts[3])) else {
            return Reply::error(401, "RepoNotFound");
        };
        let Some(commit) = repo.commit(&parts[5].replace("%2F", "/")) else {
            return Reply::error(404, "RevisionNotFound");
        };
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(name, bytes)| {
                let size = bytes.len() + usize::from(repo.misreported.as_ref() == Some(name));
                let mut s = serde_json::json!({
                    "rfilename": name,
                    "size": size,
                    "blobId": digest(name.as_bytes(), 40),
                });
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({
                        "sha256": blob_id(name, bytes),
                        "size": size,
                        "pointerSize": 134,
                    });
                } else {
                    s["blobId"] = blob_id(name, bytes).into();
                }
                s
            })
            .collect();
        let body = serde_json::json!({
            "id": format!("{}/{}", parts[2], parts[3]),
            "sha": commit,
            "siblings": siblings,
        });
        return Reply::new(200, body.to_string()).header("Content-Type", "application/json");
    }
    // /<org>/<name>/resolve/<rev>/<file...> and the LFS files' /cdn/<org>/<name>/<file...>
    let cdn = parts.first() == Some(&"cdn");
    let parts = if cdn { &parts[1..] } else { &parts[..] };
    if parts.len() < 4 || (!cdn && parts[2] != "resolve") {
        return Reply::new(404, "no such endpoint");
    }
    let repo_id = format!("{}/{}", parts[0], parts[1]);
    let Some(repo) = hub.repos.get(&repo_id) else {
        return Reply::error(401, "RepoNotFound");
    };
    let (commit, file) = if cdn {
        (String::new(), parts[2..].join("/"))
    } else {
        let Some(commit) = repo.commit(&parts[3].replace("%2F", "/")) else {
            return Reply::error(404, "RevisionNotFound");
        };
        (commit.to_string(), parts[4..].join("/"))
    };
    if let (Some(token), false) = (&repo.token, cdn) {
        match auth {
            None => return Reply::error(401, "GatedRepo"),
            Some(a) if *a != format!("Bearer {token}") => return Reply::error(403, "GatedRepo"),
            Some(_) => {}
        }
    }
    let Some(bytes) = repo.files.get(&file) else {
        return Reply::error(404, "EntryNotFound");
    };
    let etag = format!("\"{}\"", blob_id(&file, bytes));
    if is_lfs(&file) && !cdn {
        return Reply::new(302, Vec::new())
            .header("Location", format!("{url}/cdn/{repo_id}/{file}"))
            .header("X-Linked-Etag", etag)
            .header("X-Linked-Size", bytes.len().to_string())
            .header("X-Repo-Commit", commit);
    }
    let mut reply = ranged(bytes, range);
    if !cdn {
        reply = reply.header("ETag", etag).header("X-Repo-Commit", commit);
    }
    if range != Some("bytes=0-0") {
        let mut cut = hub.cut.lock().unwrap();
        if let Some((f, times)) = cut.as_mut() {
            if *f == file && *times > 0 {
                *times -= 1;
                reply.send = Some(reply.body.len() / 2);
            }
        }
    }
    reply
}

fn ranged(bytes: &[u8], range: Option<&str>) -> Reply {
    let len = bytes.len();
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Reply::new(200, bytes.to_vec());
    };
    let (a, b) = spec.split_once('-').unwrap();
    let start: usize = a.parse().unwrap();
    let end: usize = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().unwrap().min(len - 1)
    };
    if start >= len {
        return Reply::new(416, Vec::new()).header("Content-Range", format!("bytes */{len}"));
    }
    Reply::new(206, bytes[start..=end].to_vec())
        .header("Content-Range", format!("bytes {start}-{end}/{len}"))
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// The environment of a child: the given variables, and none of the caller's Hub settings or
/// proxies (hf-hub would send 127.0.0.1 requests through a proxy).
fn hub_env(cmd: &mut Command, vars: &[(&str, &str)]) {
    for key in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "XDG_CACHE_HOME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
}

/// What [`child_opens_a_model`] reported: the model root, or the error line.
#[derive(Debug)]
struct Opened {
    root: Result<PathBuf, String>,
    stderr: String,
}

/// Opens `model` in a child process with `vars` set; `args` are the revision and variant.
fn open(model: &str, revision: &str, variant: &str, vars: &[(&str, &str)]) -> Opened {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_opens_a_model",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    hub_env(&mut cmd, vars);
    cmd.env("TI_XLA_TEST_OPEN", format!("{model}|{revision}|{variant}"));
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let Some(root) = read_report(&stdout) else {
        panic!("the child reported nothing:\n{stdout}\n{stderr}")
    };
    Opened { root, stderr }
}

/// The line [`child_opens_a_model`] prints for `ModelFolder::open(model, revision, variant)`:
/// `OPENED <root>` or `FAILED <error>`.
fn open_report(model: &str, revision: Option<&str>, variant: Option<&str>) -> String {
    match ModelFolder::open(model, revision, variant) {
        Ok(folder) => format!("OPENED {}", folder.root.display()),
        Err(e) => format!("FAILED {e:#}"),
    }
}

/// The report line in a child's stdout (libtest prints around it), as [`Opened::root`].
fn read_report(stdout: &str) -> Option<Result<PathBuf, String>> {
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(str::to_string)
    };
    match (line("OPENED "), line("FAILED ")) {
        (Some(root), _) => Some(Ok(PathBuf::from(root))),
        (None, Some(err)) => Some(Err(err)),
        _ => None,
    }
}

/// With TI_XLA_TEST_OPEN=`model|revision|variant` (set only by [`open`], which runs this test
/// binary with `--exact child_opens_a_model`): opens that model in this process and prints
/// its report line. Run directly, without it: the report of a local model folder (which no
/// Hub setting affects) and of a missing one, read back as [`open`] reads a child's.
#[test]
fn child_opens_a_model() {
    if let Ok(spec) = std::env::var("TI_XLA_TEST_OPEN") {
        let mut parts = spec.split('|');
        let model = parts.next().unwrap();
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        let (revision, variant) = (some(parts.next()), some(parts.next()));
        println!(
            "\n{}",
            open_report(model, revision.as_deref(), variant.as_deref())
        );
        return;
    }
    let root = tiny_sd1_dir();
    let report = open_report(root.to_str().unwrap(), None, None);
    assert_eq!(report, format!("OPENED {}", root.display()));
    let stdout = format!("\nrunning 1 test\n\n{report}\ntest child_opens_a_model ... ok\n");
    assert_eq!(read_report(&stdout), Some(Ok(root)));

    let report = open_report("./no/such/model", None, None);
    let Some(Err(e)) = read_report(&format!("\n{report}\n")) else {
        panic!("a missing folder is a FAILED report: {report}")
    };
    assert!(
        e.starts_with("model folder ./no/such/model does not exist") && !e.contains('\n'),
        "{e}"
    );
    assert_eq!(read_report("running 0 tests\n"), None);
}

fn ok(opened: &Opened) -> PathBuf {
    match &opened.root {
        Ok(root) => root.clone(),
        Err(e) => panic!("{e}\n{}", opened.stderr),
    }
}

fn err(opened: &Opened) -> String {
    let e = opened.root.as_ref().expect_err("expected an error").clone();
    assert!(!e.contains('\n'), "one line: {e}");
    println!("error: {e}");
    e
}

/// Every file under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn needed() -> Vec<String> {
    let mut v: Vec<String> = NEEDED.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn assert_same_as_fixture(root: &Path) {
    assert_eq!(
        tree(root),
        needed(),
        "the snapshot holds exactly the needed files"
    );
    for name in needed() {
        assert_eq!(
            std::fs::read(root.join(&name)).unwrap(),
            std::fs::read(tiny_sd1_dir().join(&name)).unwrap(),
            "{name}"
        );
    }
}

fn cache_repo(home: &Path, id: &str) -> PathBuf {
    home.join("hub")
        .join(format!("models--{}", id.replace('/', "--")))
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn downloads_exactly_the_needed_files_then_works_from_the_cache() {
    let server = Server::start(&[("fake-org/tiny-sd1", FakeRepo::tiny_sd1())]);
    let dir = scratch("download");
    let home = dir.join("hf");
    let home_s = home.to_str().unwrap();
    let online = [("HF_ENDPOINT", server.url.as_str()), ("HF_HOME", home_s)];

    // The binary end to end: download, then the text encoder on the downloaded weights.
    let out = dir.join("out.safetensors");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.args([
        "forward",
        "--model",
        "fake-org/tiny-sd1",
        "--component",
        "text_encoder",
        "--no-compile-cache",
    ])
    .arg("--inputs")
    .arg(tiny_sd1_dir().join("reference/text_encoder.safetensors"))
    .arg("--output")
    .arg(&out);
    hub_env(&mut cmd, &online);
    let run = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(out.is_file());
    assert!(stderr.contains("Downloading fake-org/tiny-sd1"), "{stderr}");

    // The standard cache layout: refs/main -> commit, snapshot links into blobs/.
    let repo = cache_repo(&home, "fake-org/tiny-sd1");
    let root = repo.join("snapshots").join(MAIN);
    assert_same_as_fixture(&root);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        MAIN
    );
    assert_eq!(
        tree(&repo.join("refs")),
        vec!["main"],
        "no ref named by a commit"
    );
    let link = std::fs::read_link(root.join(UNET)).unwrap();
    assert!(link.starts_with("../../../blobs"), "{}", link.display());
    let blobs = tree(&repo.join("blobs"));
    assert!(
        !blobs.iter().any(|b| b.ends_with(".part")),
        "no partial file left: {blobs:?}"
    );
    let downloads = |reqs: &[String]| {
        reqs.iter()
            .filter(|r| r.contains("/resolve/") || r.starts_with("/cdn/"))
            .count()
    };
    let first = server.requests();
    assert!(downloads(&first) > 0);
    assert!(
        !first.iter().any(|r| r.contains("/reference/")),
        "reference/ is not needed: {first:?}"
    );

    // Online again: the listing is fetched, no file is.
    let again = open("fake-org/tiny-sd1", "", "", &online);
    assert_eq!(ok(&again), root);
    let second = &server.requests()[first.len()..];
    assert_eq!(downloads(second), 0, "{second:?}");

    // Offline, with nothing listening: the cache alone.
    let dead = dead_endpoint();
    let offline = open(
        "fake-org/tiny-sd1",
        "",
        "",
        &[
            ("HF_ENDPOINT", &dead),
            ("HF_HOME", home_s),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert_eq!(ok(&offline), root);

    // Online but unreachable: the cached copy, with a warning.
    let unreachable = open(
        "fake-org/tiny-sd1",
        "",
        "",
        &[("HF_ENDPOINT", &dead), ("HF_HOME", home_s)],
    );
    assert_eq!(ok(&unreachable), root);
    assert!(
        unreachable.stderr.contains("warning: cannot reach"),
        "{}",
        unreachable.stderr
    );
}

#[test]
fn missing_repo_and_unreachable_hub_are_one_line_errors() {
    let server = Server::start(&[("fake-org/tiny-sd1", FakeRepo::tiny_sd1())]);
    let dir = scratch("errors");
    let home = dir.join("hf");
    let home_s = home.to_str().unwrap();

    // Through the binary, as a user sees it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.args([
        "forward",
        "--model",
        "fake-org/no-such-model",
        "--component",
        "text_encoder",
        "--inputs",
        "in.safetensors",
        "--output",
    ])
    .arg(dir.join("out.safetensors"));
    hub_env(
        &mut cmd,
        &[("HF_ENDPOINT", &server.url), ("HF_HOME", home_s)],
    );
    let run: Output = cmd.output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: repository fake-org/no-such-model not found")
            && stderr.contains("huggingface-cli login"),
        "{stderr}"
    );

    let e = err(&open(
        "fake-org/tiny-sd1",
        "",
        "",
        &[("HF_ENDPOINT", &dead_endpoint()), ("HF_HOME", home_s)],
    ));
    assert!(
        e.contains("cannot reach")
            && e.contains("fake-org/tiny-sd1")
            && e.contains("HF_HUB_OFFLINE=1"),
        "{e}"
    );

    let e = err(&open(
        "fake-org/tiny-sd1",
        "",
        "",
        &[
            ("HF_ENDPOINT", &server.url),
            ("HF_HOME", home_s),
            ("HF_HUB_OFFLINE", "1"),
        ],
    ));
    assert!(
        e.contains("HF_HUB_OFFLINE is set")
            && e.contains("huggingface-cli download fake-org/tiny-sd1"),
        "{e}"
    );
    assert!(
        server.requests().iter().all(|r| !r.contains("tiny-sd1")),
        "offline asks nothing"
    );

    let e = err(&open(
        "fake-org/tiny-sd1",
        "no-such-branch",
        "",
        &[("HF_ENDPOINT", &server.url), ("HF_HOME", home_s)],
    ));
    assert!(
        e.contains("revision no-such-branch not found in fake-org/tiny-sd1"),
        "{e}"
    );
}

#[test]
fn missing_variant_and_bin_only_weights_say_what_to_do() {
    let bin_only = FakeRepo::tiny_sd1().rename(UNET, "unet/diffusion_pytorch_model.bin");
    let server = Server::start(&[
        ("fake-org/tiny-sd1", FakeRepo::tiny_sd1()),
        ("fake-org/bin-only", bin_only),
    ]);
    let dir = scratch("variants");
    let home = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];

    let e = err(&open("fake-org/tiny-sd1", "", "fp16", &env));
    assert!(
        e.contains("no text_encoder/model.fp16.safetensors (variant fp16)")
            && e.contains("drop --variant fp16"),
        "{e}"
    );
    let e = err(&open("fake-org/bin-only", "", "", &env));
    assert!(
        e.contains("only PyTorch .bin weights for unet")
            && e.contains("unet/diffusion_pytorch_model.safetensors is missing"),
        "{e}"
    );
    // Both were refused from the listing, before any download.
    assert!(
        !server.requests().iter().any(|r| r.contains("/resolve/")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn fp16_sharded_weights_are_fetched_from_their_index() {
    // fp16-named copies of the fixture weights, the UNet split in two shards with diffusers'
    // variant index name.
    let base = FakeRepo::tiny_sd1();
    let unet = base.files[UNET].clone();
    let st = safetensors::SafeTensors::deserialize(&unet).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let shard_names = [
        "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    ];
    let mut repo = base
        .clone()
        .rename(
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
        )
        .rename(
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        );
    repo.files.remove(UNET);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        for n in part {
            weight_map.insert(n.to_string(), shard_names[i].into());
        }
        repo.files.insert(
            format!("unet/{}", shard_names[i]),
            safetensors::serialize(tensors, None).unwrap(),
        );
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    repo.files.insert(
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json".into(),
        index.to_string().into_bytes(),
    );
    let server = Server::start(&[("fake-org/fp16-sharded", repo)]);
    let dir = scratch("sharded");
    let home = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];

    let e = err(&open("fake-org/fp16-sharded", "", "", &env));
    assert!(e.contains("pass --variant fp16"), "{e}");

    let root = ok(&open("fake-org/fp16-sharded", "", "fp16", &env));
    let files =
        component_files(&root.join("unet"), "diffusion_pytorch_model", Some("fp16")).unwrap();
    assert_eq!(
        files,
        shard_names.map(|s| root.join("unet").join(s)).to_vec()
    );
    let sharded = WeightFiles::open(&files).unwrap();
    let whole = WeightFiles::open(&[tiny_sd1_dir().join(UNET)]).unwrap();
    assert!(sharded.names().eq(whole.names()));
    for name in whole.names() {
        assert_eq!(
            sharded.read_as(name, xla_graphs::DType::F32).unwrap(),
            whole.read_as(name, xla_graphs::DType::F32).unwrap(),
            "{name}"
        );
    }
    assert!(component_files(&root.join("text_encoder"), "model", Some("fp16")).is_ok());
    assert!(!root.join("text_encoder/model.safetensors").exists());
}

#[test]
fn gated_repo_needs_a_token() {
    let mut gated = FakeRepo::tiny_sd1();
    gated.token = Some(TOKEN.into());
    let server = Server::start(&[("fake-org/gated", gated)]);
    let dir = scratch("gated");
    let home = dir.join("hf");
    let home_s = home.to_str().unwrap();
    let url = server.url.as_str();

    let e = err(&open(
        "fake-org/gated",
        "",
        "",
        &[("HF_ENDPOINT", url), ("HF_HOME", home_s)],
    ));
    assert!(
        e.contains("fake-org/gated is a gated model")
            && e.contains("huggingface-cli login")
            && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = err(&open(
        "fake-org/gated",
        "",
        "",
        &[
            ("HF_ENDPOINT", url),
            ("HF_HOME", home_s),
            ("HF_TOKEN", "hf_wrong"),
        ],
    ));
    assert!(e.contains("has no access"), "{e}");

    // HF_TOKEN, into a cache named by HF_HUB_CACHE.
    let cache = dir.join("elsewhere");
    let root = ok(&open(
        "fake-org/gated",
        "",
        "",
        &[
            ("HF_ENDPOINT", url),
            ("HF_HOME", home_s),
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_TOKEN", TOKEN),
        ],
    ));
    assert!(root.starts_with(&cache), "{}", root.display());
    assert_same_as_fixture(&root);

    // The token file `huggingface-cli login` writes.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let root = ok(&open(
        "fake-org/gated",
        "",
        "",
        &[("HF_ENDPOINT", url), ("HF_HOME", home_s)],
    ));
    assert!(root.starts_with(&home), "{}", root.display());
    assert_same_as_fixture(&root);
}

#[test]
fn an_interrupted_download_is_never_taken_as_complete_and_resumes() {
    let server = Server::start(&[("fake-org/tiny-sd1", FakeRepo::tiny_sd1())]);
    // Every try of the UNet weights in the first run is cut half way (hf-hub makes one more
    // request than its retry count allows, and drops its answer).
    server.cut(UNET, 4);
    let dir = scratch("interrupted");
    let home = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];

    let e = err(&open("fake-org/tiny-sd1", "", "", &env));
    assert!(e.contains(UNET) && e.contains("run again to resume"), "{e}");
    let repo = cache_repo(&home, "fake-org/tiny-sd1");
    let snapshot = repo.join("snapshots").join(MAIN);
    assert!(
        !snapshot.join(UNET).exists(),
        "no partial file in the snapshot"
    );
    let unet_bytes = std::fs::read(tiny_sd1_dir().join(UNET)).unwrap();
    let blob = blob_id(UNET, &unet_bytes);
    assert!(!repo.join("blobs").join(&blob).exists(), "no partial blob");
    let part = std::fs::metadata(repo.join("blobs").join(format!("{blob}.part"))).unwrap();
    assert!(part.len() > 0 && part.len() < unet_bytes.len() as u64);

    // The snapshot folder of the commit exists but is incomplete: neither offline use nor the
    // fallback of an unreachable Hub takes it.
    let home_s = home.to_str().unwrap();
    let e = err(&open(
        "fake-org/tiny-sd1",
        MAIN,
        "",
        &[("HF_HOME", home_s), ("HF_HUB_OFFLINE", "1")],
    ));
    assert!(
        e.contains(&format!("has no {UNET}")) && e.contains("download it again"),
        "{e}"
    );
    let e = err(&open(
        "fake-org/tiny-sd1",
        MAIN,
        "",
        &[("HF_HOME", home_s), ("HF_ENDPOINT", &dead_endpoint())],
    ));
    assert!(e.contains("cannot reach"), "{e}");

    // The next run resumes from where the part file ends.
    let root = ok(&open("fake-org/tiny-sd1", "", "", &env));
    assert_same_as_fixture(&root);
    let resumed = format!("/cdn/fake-org/tiny-sd1/{UNET} bytes={}-", part.len());
    assert!(
        server.requests().contains(&resumed),
        "{resumed} in {:?}",
        server.requests()
    );
}

#[test]
fn revisions_are_honoured_and_share_blobs() {
    let server = Server::start(&[("fake-org/tiny-sd1", FakeRepo::tiny_sd1())]);
    let dir = scratch("revisions");
    let home = dir.join("hf");
    let home_s = home.to_str().unwrap();
    let env = [("HF_ENDPOINT", server.url.as_str()), ("HF_HOME", home_s)];
    let repo = cache_repo(&home, "fake-org/tiny-sd1");

    let main = ok(&open("fake-org/tiny-sd1", "", "", &env));
    assert_eq!(main, repo.join("snapshots").join(MAIN));
    let before = server.requests().len();
    let v1 = ok(&open("fake-org/tiny-sd1", "v1.0", "", &env));
    assert_eq!(v1, repo.join("snapshots").join(V1));
    assert_same_as_fixture(&v1);
    assert_eq!(std::fs::read_to_string(repo.join("refs/v1.0")).unwrap(), V1);
    let later = &server.requests()[before..];
    assert!(
        later.iter().all(|r| r.starts_with("/api/")),
        "the same files are linked from the blobs already there: {later:?}"
    );

    // A commit as the revision, then offline by that commit.
    let by_commit = ok(&open("fake-org/tiny-sd1", V1, "", &env));
    assert_eq!(by_commit, v1);
    let offline = ok(&open(
        "fake-org/tiny-sd1",
        "v1.0",
        "",
        &[("HF_HOME", home_s), ("HF_HUB_OFFLINE", "1")],
    ));
    assert_eq!(offline, v1);
    let mut refs = tree(&repo.join("refs"));
    refs.sort();
    assert_eq!(refs, vec!["main", "v1.0"]);
}

#[test]
fn a_full_pipeline_saved_from_a_download_lists_only_the_components_it_has() {
    // As on the Hub, model_index.json names a safety checker and a feature extractor, which
    // ti-xla does not download.
    let mut repo = FakeRepo::tiny_sd1();
    let mut index: serde_json::Value =
        serde_json::from_slice(&repo.files["model_index.json"]).unwrap();
    index["safety_checker"] =
        serde_json::json!(["stable_diffusion", "StableDiffusionSafetyChecker"]);
    index["feature_extractor"] = serde_json::json!(["transformers", "CLIPImageProcessor"]);
    repo.files
        .insert("model_index.json".into(), index.to_string().into_bytes());
    for name in [
        "safety_checker/config.json",
        "safety_checker/model.safetensors",
        "feature_extractor/preprocessor_config.json",
    ] {
        repo.files.insert(name.into(), b"{}".to_vec());
    }
    let server = Server::start(&[("fake-org/with-checker", repo)]);
    let dir = scratch("full-pipeline");
    let home = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let root = ok(&open("fake-org/with-checker", "", "", &env));
    assert!(!root.join("safety_checker").exists());

    let folder = ModelFolder::open(root.to_str().unwrap(), None, None).unwrap();
    let hidden = folder.text_encoder.hidden_size;
    let out = dir.join("pipeline");
    save_full_pipeline(
        &root,
        &[root.join("tokenizer").as_path()],
        None,
        &out,
        &LearnedTokens {
            names: &["<x>".to_string()],
            first_ids: &[folder.text_encoder.vocab_size],
            rows: &vec![0.0; hidden],
            widths: &[hidden],
        },
    )
    .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model_index.json")).unwrap())
            .unwrap();
    let absent = serde_json::json!([null, null]);
    assert_eq!(saved["safety_checker"], absent);
    assert_eq!(saved["feature_extractor"], absent);
    assert_eq!(
        saved["unet"],
        serde_json::json!(["diffusers", "UNet2DConditionModel"])
    );
    assert_eq!(
        saved["text_encoder"],
        serde_json::json!(["transformers", "CLIPTextModel"])
    );
    assert_eq!(
        saved["tokenizer"],
        serde_json::json!(["transformers", "CLIPTokenizer"])
    );
}

#[test]
fn a_download_of_the_wrong_size_is_removed() {
    let vae = "vae/diffusion_pytorch_model.safetensors";
    let mut repo = FakeRepo::tiny_sd1();
    repo.misreported = Some(vae.into());
    let bytes = repo.files[vae].clone();
    let server = Server::start(&[("fake-org/tiny-sd1", repo)]);
    let dir = scratch("wrong-size");
    let home = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let e = err(&open("fake-org/tiny-sd1", "", "", &env));
    assert!(
        e.contains(&format!(
            "{vae} from fake-org/tiny-sd1 at revision main ended at {} of {} bytes",
            bytes.len(),
            bytes.len() + 1
        )),
        "{e}"
    );
    let repo_dir = cache_repo(&home, "fake-org/tiny-sd1");
    assert!(repo_dir
        .join("snapshots")
        .join(MAIN)
        .join("unet/config.json")
        .is_file());
    assert!(repo_dir
        .join("snapshots")
        .join(MAIN)
        .join(vae)
        .symlink_metadata()
        .is_err());
    assert!(!repo_dir.join("blobs").join(blob_id(vae, &bytes)).exists());
}
