//! `ti-xla train --push-to-hub` and `ti-xla push` against a stand-in for the Hugging Face Hub
//! on 127.0.0.1 that speaks the part of the Hub's HTTP API a push uses (whoami, repo lookup and
//! creation, preupload, the LFS batch with basic PUT uploads and verify, the NDJSON commit),
//! checks each request (the token on every Hub call, never on the LFS storage URL; the SHA-256
//! of every LFS upload) and stores the committed files, so the tests read back what a push left
//! in the repo. Failures are injected by request prefix: a wrong token, a server error once
//! (retried) or for good (one line, and the output folder byte for byte as it was).
//!
//! The environment (HF_ENDPOINT, HF_HOME, HF_TOKEN) is only ever set for the `ti-xla` child.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

mod scratch;
use scratch::{compile_cache, fixture, fresh_dir};

const TOKEN: &str = "hf_push_test_token_0123456789";
const USER: &str = "test-user";

// ---------------------------------------------------------------------------------------------
// The Hub stand-in.

#[derive(Default)]
struct StoredRepo {
    private: bool,
    files: BTreeMap<String, Vec<u8>>,
    commits: usize,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, StoredRepo>,
    /// LFS objects by SHA-256.
    lfs: BTreeMap<String, Vec<u8>>,
    /// "METHOD PATH" of every request, in order.
    log: Vec<String>,
    /// Requests whose "METHOD PATH" starts with the prefix answer 500, this many times.
    fail: Option<(String, usize)>,
    /// Problems the stand-in saw in requests (a token where none belongs, a bad checksum ...).
    problems: Vec<String>,
}

struct Hub {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Hub {
    fn start() -> Hub {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (s, u) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, u) = (s.clone(), u.clone());
                std::thread::spawn(move || {
                    let _ = serve(&s, &u, stream);
                });
            }
        });
        Hub { url, state }
    }

    fn fail(&self, prefix: &str, times: usize) {
        self.state.lock().unwrap().fail = Some((prefix.to_string(), times));
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    fn files(&self, repo: &str) -> BTreeMap<String, Vec<u8>> {
        let state = self.state.lock().unwrap();
        state
            .repos
            .get(repo)
            .map(|r| r.files.clone())
            .unwrap_or_default()
    }

    fn repo(&self, repo: &str) -> Option<(bool, usize)> {
        let state = self.state.lock().unwrap();
        state.repos.get(repo).map(|r| (r.private, r.commits))
    }

    fn problems(&self) -> Vec<String> {
        self.state.lock().unwrap().problems.clone()
    }
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("/").to_string();
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
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().unwrap_or(0), 0);
        reader.read_exact(&mut body)?;
    } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let path = target.split('?').next().unwrap().to_string();
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn serve(state: &Mutex<State>, url: &str, stream: TcpStream) -> std::io::Result<()> {
    let request = read_request(&stream)?;
    let (status, body) = route(state, url, &request);
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, serde_json::json!({ "error": message }).to_string())
}

fn route(state: &Mutex<State>, url: &str, r: &Request) -> (u16, String) {
    let mut s = state.lock().unwrap();
    let line = format!("{} {}", r.method, r.path);
    s.log.push(line.clone());
    if let Some((prefix, times)) = s.fail.as_mut() {
        if line.starts_with(prefix.as_str()) && *times > 0 {
            *times -= 1;
            return error(
                500,
                "Internal Error - We're working hard to fix this as soon as possible!",
            );
        }
    }
    let auth = r.headers.get("authorization");
    let storage = r.path.starts_with("/lfs-upload/");
    if storage {
        if auth.is_some() {
            s.problems
                .push(format!("{line} carried an Authorization header"));
        }
    } else if auth != Some(&format!("Bearer {TOKEN}")) {
        return error(401, "Invalid credentials in Authorization header");
    }
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let json = || serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_default();
    match (r.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "whoami-v2"]) => (
            200,
            serde_json::json!({"name": USER, "type": "user"}).to_string(),
        ),
        ("GET", ["api", "models", ns, name]) => {
            let id = format!("{ns}/{name}");
            match s.repos.get(&id) {
                Some(_) => (200, serde_json::json!({ "id": id }).to_string()),
                None => error(404, "Repository not found"),
            }
        }
        ("POST", ["api", "repos", "create"]) => {
            let body = json();
            let (ns, name) = (body["organization"].as_str(), body["name"].as_str());
            let (Some(ns), Some(name)) = (ns, name) else {
                return error(400, "name and organization are required");
            };
            if ns != USER || body["type"] != "model" {
                return error(
                    403,
                    "You don't have the rights to create a model under this namespace",
                );
            }
            let id = format!("{ns}/{name}");
            if s.repos.contains_key(&id) {
                return error(409, "You already created this model repo");
            }
            let private = body["private"].as_bool().unwrap_or(false);
            s.repos.insert(
                id.clone(),
                StoredRepo {
                    private,
                    ..StoredRepo::default()
                },
            );
            (
                200,
                serde_json::json!({ "url": format!("{url}/{id}") }).to_string(),
            )
        }
        ("POST", ["api", "models", ns, name, "preupload", "main"]) => {
            if !s.repos.contains_key(&format!("{ns}/{name}")) {
                return error(404, "Repository not found");
            }
            let files: Vec<serde_json::Value> = json()["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let path = f["path"].as_str().unwrap_or("");
                    let binary = path.ends_with(".safetensors") || path.ends_with(".png");
                    serde_json::json!({
                        "path": path,
                        "uploadMode": if binary { "lfs" } else { "regular" },
                        "shouldIgnore": false,
                    })
                })
                .collect();
            (200, serde_json::json!({ "files": files }).to_string())
        }
        ("POST", [ns, repo_git, "info", "lfs", "objects", "batch"]) => {
            let name = repo_git.trim_end_matches(".git");
            if !s.repos.contains_key(&format!("{ns}/{name}")) {
                return error(404, "Repository not found");
            }
            let body = json();
            if body["operation"] != "upload" || body["hash_algo"] != "sha256" {
                s.problems
                    .push(format!("LFS batch without upload/sha256: {body}"));
            }
            let objects: Vec<serde_json::Value> = body["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let oid = o["oid"].as_str().unwrap_or("");
                    if s.lfs.contains_key(oid) {
                        serde_json::json!({"oid": oid, "size": o["size"]})
                    } else {
                        serde_json::json!({"oid": oid, "size": o["size"], "actions": {
                            "upload": {"href": format!("{url}/lfs-upload/{oid}"), "header": {"X-Upload-Test": "1"}},
                            "verify": {"href": format!("{url}/lfs-verify"), "header": {"X-Verify-Test": "1"}},
                        }})
                    }
                })
                .collect();
            (
                200,
                serde_json::json!({"transfer": "basic", "objects": objects}).to_string(),
            )
        }
        ("PUT", ["lfs-upload", oid]) => {
            if r.headers.get("x-upload-test").map(String::as_str) != Some("1") {
                s.problems
                    .push(format!("{line} without the action's header"));
            }
            if !r.headers.contains_key("content-length") {
                s.problems.push(format!("{line} without Content-Length"));
            }
            if sha256(&r.body) != *oid {
                return error(400, "checksum mismatch");
            }
            s.lfs.insert(oid.to_string(), r.body.clone());
            (200, String::new())
        }
        ("POST", ["lfs-verify"]) => {
            let body = json();
            let oid = body["oid"].as_str().unwrap_or("");
            match s.lfs.get(oid) {
                Some(b) if Some(b.len() as u64) == body["size"].as_u64() => (200, "{}".into()),
                _ => error(404, "object not found"),
            }
        }
        ("POST", ["api", "models", ns, name, "commit", "main"]) => {
            let id = format!("{ns}/{name}");
            if !s.repos.contains_key(&id) {
                return error(404, "Repository not found");
            }
            let text = String::from_utf8_lossy(&r.body).to_string();
            let mut lines = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default());
            let header = lines.next().unwrap_or_default();
            if header["key"] != "header" || header["value"]["summary"].as_str().is_none() {
                return error(400, "the first line must be the header");
            }
            let mut added = BTreeMap::new();
            for l in lines {
                let v = &l["value"];
                let path = v["path"].as_str().unwrap_or("").to_string();
                let bytes = match l["key"].as_str() {
                    Some("file") => BASE64
                        .decode(v["content"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                    Some("lfsFile") => match s.lfs.get(v["oid"].as_str().unwrap_or("")) {
                        Some(b) => b.clone(),
                        None => return error(400, &format!("LFS object of {path} not uploaded")),
                    },
                    _ => return error(400, "unknown key"),
                };
                added.insert(path, bytes);
            }
            let repo = s.repos.get_mut(&id).unwrap();
            repo.files.extend(added);
            repo.commits += 1;
            (200, serde_json::json!({"commitUrl": format!("{url}/{id}/commit/c{}", repo.commits), "commitOid": "c"}).to_string())
        }
        _ => error(404, "no such endpoint"),
    }
}

// ---------------------------------------------------------------------------------------------
// Output folders and child processes.

/// Every file under `dir`, hidden ones included, with its bytes.
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

/// A child's environment: the stand-in, an empty HF_HOME, no proxies; `token` as HF_TOKEN.
fn hub_command(hub: &Hub, home: &Path, token: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
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
    cmd.env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", home)
        .env("TI_XLA_HUB_RETRY_SECS", "0.05")
        .env("TI_XLA_HUB_TIMEOUT_SECS", "20");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd
}

fn push(hub: &Hub, home: &Path, token: Option<&str>, out: &Path, extra: &[&str]) -> Output {
    hub_command(hub, home, token)
        .arg("push")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a failed run with exactly one `error:` line containing every needle; returns it.
fn one_error(o: &Output, needles: &[&str]) -> String {
    let text = stderr(o);
    assert!(!o.status.success(), "must fail: {text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line in {text}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {}", errors[0]);
    }
    assert!(!text.contains(TOKEN), "the token was printed: {text}");
    eprintln!("{}", errors[0]);
    errors[0].to_string()
}

fn ok(o: &Output) -> String {
    let text = stderr(o);
    assert!(o.status.success(), "ti-xla failed: {text}");
    assert!(!text.contains(TOKEN), "the token was printed: {text}");
    text
}

/// An output folder as a finished run leaves it, written by hand (no training): the settings,
/// the manifest, an embedding, a steps file, a loss plot, a checkpoint and log (not pushed), and
/// a file of the user's (not in the manifest, so not pushed).
fn fake_output(name: &str) -> PathBuf {
    let out = fresh_dir(name);
    std::fs::create_dir_all(out.join("checkpoint-2")).unwrap();
    let settings = serde_json::json!({
        "ti_xla_version": "0.1.0",
        "pretrained_model_name_or_path": "test-org/tiny-sd1",
        "base_model": "test-org/tiny-sd1",
        "placeholder_token": "<cat-toy>",
        "initializer_token": "toy",
        "num_vectors": 1,
        "learnable_property": "object",
        "resolution": 16,
        "max_train_steps": 2,
    });
    let files: [(&str, Vec<u8>); 7] = [
        ("train_settings.json", settings.to_string().into_bytes()),
        (
            "learned_embeds.safetensors",
            (0..4096u32).flat_map(|i| i.to_le_bytes()).collect(),
        ),
        ("learned_embeds-steps-2.safetensors", vec![7; 1000]),
        ("loss.png", b"\x89PNG fake".to_vec()),
        ("train_log.jsonl", b"{\"step\":0,\"loss\":0.5}\n".to_vec()),
        ("checkpoint-2/state.safetensors", vec![1; 64]),
        ("my-notes.txt", b"mine".to_vec()),
    ];
    for (rel, bytes) in &files {
        std::fs::write(out.join(rel), bytes).unwrap();
    }
    let manifest: Vec<&str> = files[..6]
        .iter()
        .map(|(r, _)| *r)
        .chain(["checkpoint-2"])
        .collect();
    std::fs::write(
        out.join(".ti-xla-manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    out
}

/// The model card's front matter, parsed as YAML.
fn front_matter(card: &[u8]) -> serde_norway::Value {
    let text = std::str::from_utf8(card).unwrap();
    let rest = text
        .strip_prefix("---\n")
        .expect("the card opens with front matter");
    let (yaml, _) = rest.split_once("\n---\n").expect("the front matter closes");
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("front matter is not YAML: {e}\n{yaml}"))
}

fn tags(front: &serde_norway::Value) -> Vec<String> {
    front["tags"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn a_run_with_push_to_hub_uploads_its_files_and_a_model_card() {
    let hub = Hub::start();
    let home = fresh_dir("train-home");
    // The model as a Hugging Face cache snapshot, so the card can name its repo id.
    let snapshot_dir = home
        .join("hub/models--test-org--tiny-sd1/snapshots/1111111111111111111111111111111111111111");
    copy_dir(&fixture("tiny-sd1"), &snapshot_dir);
    let out = fresh_dir("cat-toy-embedding");
    // The token as a flag: it must show up neither in the output nor in train_settings.json.
    let run = hub_command(&hub, &home, None)
        .args([
            "train",
            "--hub_token",
            TOKEN,
            "--pretrained_model_name_or_path",
        ])
        .arg(&snapshot_dir)
        .arg("--train_data_dir")
        .arg(fixture("sample-images"))
        .args([
            "--placeholder_token",
            "<cat-toy>",
            "--initializer_token",
            "toy",
        ])
        .args([
            "--resolution",
            "16",
            "--train_batch_size",
            "1",
            "--max_train_steps",
            "4",
        ])
        .args([
            "--learning_rate",
            "5e-3",
            "--lr_warmup_steps",
            "0",
            "--save_steps",
            "2",
        ])
        .args(["--checkpointing_steps", "0"])
        .args([
            "--validation_prompt",
            "a photo of <cat-toy>",
            "--num_validation_images",
            "1",
        ])
        .args(["--validation_steps", "4"])
        .args(["--push_to_hub", "--push-every-save", "--hub_private"])
        .arg("--output_dir")
        .arg(&out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .output()
        .unwrap();
    let text = ok(&run);
    let settings = std::fs::read_to_string(out.join("train_settings.json")).unwrap();
    assert!(
        !settings.contains(TOKEN) && settings.contains("<cat-toy>"),
        "{settings}"
    );
    let repo = format!("{USER}/cat-toy-embedding");
    let (private, commits) = hub
        .repo(&repo)
        .unwrap_or_else(|| panic!("no repo {repo}: {text}"));
    assert!(private, "--hub-private");
    assert_eq!(commits, 3, "after steps 2 and 4, and at the end: {text}");
    let files = hub.files(&repo);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "README.md",
            "learned_embeds-steps-2.safetensors",
            "learned_embeds-steps-4.safetensors",
            "learned_embeds.safetensors",
            "loss.png",
            "validation/step-4/0000.png",
            "validation/step-4/grid.png",
        ],
        "{text}"
    );
    for (name, bytes) in &files {
        if name != "README.md" {
            assert_eq!(
                *bytes,
                std::fs::read(out.join(name)).unwrap(),
                "{name} as written"
            );
        }
    }
    assert!(
        !out.join("README.md").exists(),
        "the card goes up from memory"
    );
    let card = &files["README.md"];
    let front = front_matter(card);
    assert_eq!(front["base_model"].as_str(), Some("test-org/tiny-sd1"));
    assert_eq!(front["license"].as_str(), Some("creativeml-openrail-m"));
    let tags = tags(&front);
    for t in [
        "textual_inversion",
        "stable-diffusion",
        "diffusers",
        "ti-xla",
    ] {
        assert!(tags.iter().any(|x| x == t), "tag {t} in {tags:?}");
    }
    let body = String::from_utf8_lossy(card);
    for needle in [
        "<cat-toy>",
        "load_textual_inversion(\"test-user/cat-toy-embedding\"",
        "embeddings/",
        "embedding:cat-toy",
        "| training steps | 4 |",
        "![img_0](./validation/step-4/0000.png)",
        "![loss](./loss.png)",
    ] {
        assert!(body.contains(needle), "{needle:?} in the card:\n{body}");
    }
    assert!(hub.problems().is_empty(), "{:?}", hub.problems());
    // The same folder pushed again later: the repo exists (no create), nothing large re-sent.
    hub.clear_log();
    let before = snapshot(&out);
    ok(&push(&hub, &home, Some(TOKEN), &out, &[]));
    assert_eq!(snapshot(&out), before, "a push leaves the folder as it was");
    let log = hub.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("/api/repos/create") || l.starts_with("PUT")),
        "{log:?}"
    );
    assert_eq!(hub.repo(&repo).unwrap().1, 4);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_missing_repo_is_created_and_only_ti_xlas_outputs_go_up() {
    let hub = Hub::start();
    let home = fresh_dir("create-home");
    let out = fake_output("create");
    let before = snapshot(&out);
    // --hub-token, with HF_TOKEN unset; a bare name goes under the token's user.
    let o = push(
        &hub,
        &home,
        None,
        &out,
        &["--hub_model_id", "my-cat", "--hub_token", TOKEN],
    );
    ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{}/{USER}/my-cat", hub.url)
    );
    assert_eq!(snapshot(&out), before);
    let (private, commits) = hub.repo("test-user/my-cat").expect("created");
    assert!(!private && commits == 1);
    let files = hub.files("test-user/my-cat");
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "README.md",
            "learned_embeds-steps-2.safetensors",
            "learned_embeds.safetensors",
            "loss.png"
        ]
    );
    let front = front_matter(&files["README.md"]);
    assert_eq!(front["base_model"].as_str(), Some("test-org/tiny-sd1"));
    let log = hub.log();
    assert!(
        log.contains(&"POST /api/repos/create".to_string()),
        "{log:?}"
    );
    assert!(hub.problems().is_empty(), "{:?}", hub.problems());
}

#[test]
fn a_refused_token_is_one_line_and_touches_nothing() {
    let hub = Hub::start();
    let home = fresh_dir("auth-home");
    let out = fake_output("auth");
    let before = snapshot(&out);
    let o = push(
        &hub,
        &home,
        Some("hf_wrong"),
        &out,
        &["--hub-model-id", "test-user/cat"],
    );
    one_error(
        &o,
        &[
            "did not accept the Hub token",
            "huggingface-cli login",
            "ti-xla push",
            "--hub-model-id test-user/cat",
        ],
    );
    assert_eq!(snapshot(&out), before);
    assert!(hub.repo("test-user/cat").is_none());
    // No token anywhere: said without a request.
    let o = push(&hub, &home, None, &out, &[]);
    one_error(&o, &["needs a token with write access", "HF_TOKEN"]);
    assert_eq!(snapshot(&out), before);
}

#[test]
fn a_server_error_is_retried_and_a_lasting_one_is_one_line() {
    let hub = Hub::start();
    let home = fresh_dir("error-home");
    let out = fake_output("errors");
    let before = snapshot(&out);
    // Once, mid-upload: retried.
    hub.fail("PUT /lfs-upload/", 1);
    ok(&push(
        &hub,
        &home,
        Some(TOKEN),
        &out,
        &["--hub-model-id", "flaky"],
    ));
    let puts = hub.log().iter().filter(|l| l.starts_with("PUT ")).count();
    assert_eq!(puts, 3 + 1, "three LFS files, one PUT retried");
    assert_eq!(hub.repo("test-user/flaky").unwrap().1, 1);
    // For good, at the commit: three tries, one line, the folder untouched.
    let out2 = fake_output("errors-lasting");
    std::fs::write(out2.join("learned_embeds.safetensors"), b"a new embedding").unwrap();
    let before2 = snapshot(&out2);
    hub.clear_log();
    hub.fail("POST /api/models/test-user/lasting/commit", usize::MAX);
    let o = push(
        &hub,
        &home,
        Some(TOKEN),
        &out2,
        &["--hub-model-id", "lasting"],
    );
    one_error(
        &o,
        &[
            "answered 500 3 times",
            "commit",
            "try again later",
            "ti-xla push",
            "--hub-model-id lasting",
        ],
    );
    assert_eq!(snapshot(&out2), before2);
    let commits = hub.log().iter().filter(|l| l.contains("/commit/")).count();
    assert_eq!(commits, 3, "bounded tries");
    // The retry it names works, and resumes: the LFS objects uploaded before are not re-sent.
    hub.fail("", 0);
    hub.clear_log();
    ok(&push(
        &hub,
        &home,
        Some(TOKEN),
        &out2,
        &["--hub-model-id", "lasting"],
    ));
    assert!(
        !hub.log().iter().any(|l| l.starts_with("PUT ")),
        "{:?}",
        hub.log()
    );
    assert_eq!(
        hub.files("test-user/lasting")["learned_embeds.safetensors"],
        b"a new embedding".to_vec()
    );
    assert_eq!(snapshot(&out), before);
    assert!(hub.problems().is_empty(), "{:?}", hub.problems());
}

#[test]
fn a_saved_full_pipeline_goes_up_too() {
    let hub = Hub::start();
    let home = fresh_dir("pipeline-home");
    let out = fake_output("pipeline");
    let index = serde_json::json!({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "safety_checker": [null, null],
    });
    std::fs::create_dir_all(out.join("unet")).unwrap();
    std::fs::create_dir_all(out.join("tokenizer")).unwrap();
    std::fs::write(out.join("model_index.json"), index.to_string()).unwrap();
    std::fs::write(out.join("unet/config.json"), "{}").unwrap();
    std::fs::write(out.join("tokenizer/vocab.json"), "{}").unwrap();
    let manifest_path = out.join(".ti-xla-manifest.json");
    let mut manifest: Vec<String> =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.extend(
        [
            "model_index.json",
            "unet",
            "unet/config.json",
            "tokenizer",
            "tokenizer/vocab.json",
        ]
        .map(String::from),
    );
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let before = snapshot(&out);
    ok(&push(&hub, &home, Some(TOKEN), &out, &[]));
    assert_eq!(snapshot(&out), before);
    let files = hub.files("test-user/pipeline");
    for f in [
        "model_index.json",
        "unet/config.json",
        "tokenizer/vocab.json",
    ] {
        assert!(files.contains_key(f), "{f} in {:?}", files.keys());
    }
    let card = String::from_utf8_lossy(&files["README.md"]).to_string();
    assert!(
        card.contains("StableDiffusionPipeline.from_pretrained(\"test-user/pipeline\")"),
        "{card}"
    );
}
