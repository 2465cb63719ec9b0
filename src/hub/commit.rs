//! One commit of files to a model repo, as the Hub's HTTP API takes it (and `huggingface_hub`
//! sends it): `POST /api/models/{id}/preupload/{rev}` says which files go through LFS; those
//! are offered to `{id}.git/info/lfs/objects/batch` (basic transfer), uploaded with one `PUT`
//! each and verified, unless the Hub already holds them, which makes a retried push resume
//! where the last one stopped; then `POST /api/models/{id}/commit/{rev}` (NDJSON) adds every
//! file: the LFS ones by SHA-256, the small ones inline in base64. Each request is retried on
//! transient failures ([`super::http::TRIES`] tries).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::http::HubClient;

/// Bytes of a file's start the preupload request shows the Hub (as `huggingface_hub`).
const SAMPLE_BYTES: usize = 512;
/// Files per preupload or LFS batch request.
const CHUNK: usize = 256;
const REVISION: &str = "main";

/// Where a pushed file's bytes come from.
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// One file of a commit.
pub struct PushFile {
    pub path_in_repo: String,
    pub source: Source,
}

/// What the commit needs to know of a file, read once.
struct Prepared<'a> {
    file: &'a PushFile,
    size: u64,
    sha256: String,
    sample: Vec<u8>,
}

impl PushFile {
    fn open(&self) -> Result<Box<dyn Read + '_>> {
        Ok(match &self.source {
            Source::File(path) => Box::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            ),
            Source::Bytes(bytes) => Box::new(bytes.as_slice()),
        })
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open()?
            .read_to_end(&mut out)
            .with_context(|| format!("cannot read {}", self.path_in_repo))?;
        Ok(out)
    }

    /// Size, SHA-256 and the first bytes, in one pass.
    fn prepare(&self) -> Result<Prepared<'_>> {
        let mut reader = self.open()?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let (mut size, mut sample) = (0u64, Vec::new());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", self.path_in_repo))?;
            if n == 0 {
                break;
            }
            if sample.len() < SAMPLE_BYTES {
                let take = n.min(SAMPLE_BYTES - sample.len());
                sample.extend_from_slice(&buf[..take]);
            }
            hash.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hash
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Prepared {
            file: self,
            size,
            sha256,
            sample,
        })
    }
}

/// Commits `files` to `repo_id` on `main` with `summary` as the message; returns the commit
/// URL the Hub reports (or the repo's).
pub fn commit(hub: &HubClient, repo_id: &str, files: &[PushFile], summary: &str) -> Result<String> {
    let prepared = files
        .iter()
        .map(PushFile::prepare)
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = prepared.iter().map(|p| p.size).sum();
    eprintln!(
        "pushing {} file(s), {}, to {}/{repo_id}",
        prepared.len(),
        size_text(total),
        hub.endpoint
    );
    let lfs = upload_modes(hub, repo_id, &prepared)?;
    let lfs_files: Vec<&Prepared> = prepared
        .iter()
        .filter(|p| lfs.contains_key(&p.file.path_in_repo))
        .collect();
    for chunk in lfs_files.chunks(CHUNK) {
        upload_lfs(hub, repo_id, chunk)?;
    }
    let mut ndjson = serde_json::json!({
        "key": "header",
        "value": {"summary": summary, "description": ""},
    })
    .to_string();
    for p in &prepared {
        let path = &p.file.path_in_repo;
        let line = if lfs.contains_key(path) {
            serde_json::json!({
                "key": "lfsFile",
                "value": {"path": path, "algo": "sha256", "oid": p.sha256, "size": p.size},
            })
        } else {
            serde_json::json!({
                "key": "file",
                "value": {"path": path, "encoding": "base64", "content": BASE64.encode(p.file.bytes()?)},
            })
        };
        ndjson.push('\n');
        ndjson.push_str(&line.to_string());
    }
    ndjson.push('\n');
    let body = hub
        .call(|| {
            hub.request("POST", &format!("/api/models/{repo_id}/commit/{REVISION}"))
                .set("Content-Type", "application/x-ndjson")
                .send_string(&ndjson)
                .map_err(Box::new)
        })
        .map_err(|f| hub.error(&f, &format!("commit the files to {repo_id}")))?;
    let url = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["commitUrl"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{}/{repo_id}", hub.endpoint));
    Ok(url)
}

/// The files the Hub wants through LFS (path -> true); the rest go inline.
fn upload_modes(
    hub: &HubClient,
    repo_id: &str,
    prepared: &[Prepared],
) -> Result<BTreeMap<String, bool>> {
    let mut lfs = BTreeMap::new();
    for chunk in prepared.chunks(CHUNK) {
        let files: Vec<serde_json::Value> = chunk
            .iter()
            .map(|p| {
                serde_json::json!({
                    "path": p.file.path_in_repo,
                    "sample": BASE64.encode(&p.sample),
                    "size": p.size,
                })
            })
            .collect();
        let body = serde_json::json!({ "files": files }).to_string();
        let answer = hub
            .call(|| {
                hub.request(
                    "POST",
                    &format!("/api/models/{repo_id}/preupload/{REVISION}"),
                )
                .set("Content-Type", "application/json")
                .send_string(&body)
                .map_err(Box::new)
            })
            .map_err(|f| hub.error(&f, &format!("prepare the upload to {repo_id}")))?;
        let answer: serde_json::Value = serde_json::from_str(&answer).with_context(|| {
            format!(
                "{} answered the preupload request for {repo_id} with something other than JSON",
                hub.endpoint
            )
        })?;
        for f in answer["files"].as_array().into_iter().flatten() {
            if let (Some(path), Some("lfs")) = (f["path"].as_str(), f["uploadMode"].as_str()) {
                lfs.insert(path.to_string(), true);
            }
        }
    }
    Ok(lfs)
}

/// Uploads the LFS objects the Hub does not hold yet (basic transfer: one PUT each, then the
/// verify call when the Hub asks for one).
fn upload_lfs(hub: &HubClient, repo_id: &str, files: &[&Prepared]) -> Result<()> {
    let objects: Vec<serde_json::Value> = files
        .iter()
        .map(|p| serde_json::json!({"oid": p.sha256, "size": p.size}))
        .collect();
    let body = serde_json::json!({
        "operation": "upload",
        "transfers": ["basic"],
        "objects": objects,
        "hash_algo": "sha256",
        "ref": {"name": format!("refs/heads/{REVISION}")},
    })
    .to_string();
    let what = format!("start the LFS upload to {repo_id}");
    let answer = hub
        .call(|| {
            hub.request("POST", &format!("/{repo_id}.git/info/lfs/objects/batch"))
                .set("Accept", "application/vnd.git-lfs+json")
                .set("Content-Type", "application/vnd.git-lfs+json")
                .send_string(&body)
                .map_err(Box::new)
        })
        .map_err(|f| hub.error(&f, &what))?;
    let answer: serde_json::Value = serde_json::from_str(&answer).with_context(|| {
        format!(
            "{} answered the LFS batch with something other than JSON",
            hub.endpoint
        )
    })?;
    if let Some(t) = answer["transfer"].as_str().filter(|t| *t != "basic") {
        bail!(
            "{} asked for an LFS upload by {t:?} transfer, which ti-xla does not speak (it sends basic)",
            hub.endpoint
        );
    }
    for object in answer["objects"].as_array().into_iter().flatten() {
        let oid = object["oid"].as_str().unwrap_or_default();
        let Some(p) = files.iter().find(|p| p.sha256 == oid) else {
            continue;
        };
        let name = &p.file.path_in_repo;
        if let Some(message) = object["error"]["message"].as_str() {
            bail!(
                "{} refused the LFS upload of {name}: {message}",
                hub.endpoint
            );
        }
        let actions = &object["actions"];
        // No upload action: the Hub holds the object already.
        let Some(href) = actions["upload"]["href"].as_str() else {
            continue;
        };
        eprintln!("uploading {name} ({})", size_text(p.size));
        let headers = action_headers(&actions["upload"]);
        hub.call(|| {
            let mut request = hub.storage_request("PUT", href);
            for (k, v) in &headers {
                request = request.set(k, v);
            }
            let reader = match p.file.open() {
                Ok(r) => r,
                Err(e) => {
                    let e = std::io::Error::other(format!("{e:#}"));
                    return Err(Box::new(ureq::Error::from(e)));
                }
            };
            request
                .set("Content-Length", &p.size.to_string())
                .send(reader)
                .map_err(Box::new)
        })
        .map_err(|f| hub.error(&f, &format!("upload {name} to {repo_id}")))?;
        if let Some(verify) = actions["verify"]["href"].as_str() {
            let headers = action_headers(&actions["verify"]);
            let body = serde_json::json!({"oid": p.sha256, "size": p.size}).to_string();
            hub.call(|| {
                let mut request = hub.request("POST", verify);
                for (k, v) in &headers {
                    request = request.set(k, v);
                }
                request
                    .set("Content-Type", "application/vnd.git-lfs+json")
                    .send_string(&body)
                    .map_err(Box::new)
            })
            .map_err(|f| hub.error(&f, &format!("verify the upload of {name} to {repo_id}")))?;
        }
    }
    Ok(())
}

/// `812 B`, `14.2 kB`, `3.4 GB`.
fn size_text(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// The headers an LFS action asks for.
fn action_headers(action: &serde_json::Value) -> Vec<(String, String)> {
    action["header"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}
