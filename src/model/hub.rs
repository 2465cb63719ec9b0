//! Models from the Hugging Face Hub by repo id, kept in the local Hugging Face cache in the
//! layout `huggingface_hub` writes (`models--org--name/{blobs,snapshots,refs}`), so ti-xla and
//! the Python tools share one copy.
//!
//! [`download`] lists the repo at a revision, picks exactly the files ti-xla reads (configs,
//! tokenizer files, safetensors weights for the text encoder, UNet and VAE, with a variant or
//! sharded), and fetches the missing ones pinned to the revision's commit with `hf-hub`'s
//! blocking client. A file is only ever linked into a snapshot once it is complete: `hf-hub`
//! writes `blobs/<etag>.part` (resumed by the next run) and renames it, and the size is checked
//! against the listing before the file counts as downloaded.
//!
//! The environment is read as `huggingface_hub` reads it: `HF_ENDPOINT`, `HF_HOME`,
//! `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, and the token from `HF_TOKEN`, else the file that
//! `huggingface-cli login` writes (`HF_TOKEN_PATH`, default `$HF_HOME/token`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::ProgressBar;

use crate::io::weights::{shard_names, weight_file_names};
use crate::model::component::Component;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files at least this large get a progress bar.
const BAR_FROM_BYTES: u64 = 1 << 20;

/// Retries of an interrupted file download within one run (each resumes where it stopped).
const RETRIES: usize = 2;
/// Tries of the file-list request before the Hub counts as unreachable.
const LISTING_TRIES: u32 = 3;

/// How long one request to the Hub may take: `TI_XLA_HUB_TIMEOUT_SECS`, default 60 s.
pub fn request_timeout() -> Duration {
    let secs = std::env::var("TI_XLA_HUB_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs)
}

/// Files every diffusers pipeline ti-xla reads has.
const REQUIRED: [&str; 5] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
];

/// Tokenizer files, each fetched when the repo has it (the loader needs `tokenizer.json` or
/// `vocab.json` + `merges.txt`; the others adjust special tokens and length).
const TOKENIZER: [&str; 6] = [
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer.json",
    "tokenizer/added_tokens.json",
];

/// The Hub could not be reached, stopped sending, or failed on its side (5xx), as opposed to
/// answering that something is missing or refused: a complete cached copy may stand in.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

fn env_value(key: &str) -> Option<String> {
    std::env::var(key)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn env_path(key: &str) -> Option<PathBuf> {
    env_value(key).map(PathBuf::from)
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home() -> Option<PathBuf> {
    env_path("HF_HOME")
        .or_else(|| env_path("XDG_CACHE_HOME").map(|c| c.join("huggingface")))
        .or_else(|| env_path("HOME").map(|h| h.join(".cache/huggingface")))
}

/// The hub cache: `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else `<hf_home>/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    env_path("HF_HUB_CACHE")
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| hf_home().map(|h| h.join("hub")))
}

/// Whether `key` is set to a true value (1, ON, YES, TRUE in any case), as huggingface_hub reads
/// its switches.
fn env_true(key: &str) -> bool {
    env_value(key)
        .is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// Whether `HF_HUB_OFFLINE` is set to a true value.
pub fn offline() -> bool {
    env_true("HF_HUB_OFFLINE")
}

/// The access token: `$HF_TOKEN` (or the older `$HUGGING_FACE_HUB_TOKEN`), else the file
/// `huggingface-cli login` writes (`$HF_TOKEN_PATH`, default `<hf_home>/token`).
pub fn token() -> Option<String> {
    env_value("HF_TOKEN")
        .or_else(|| env_value("HUGGING_FACE_HUB_TOKEN"))
        .or_else(|| {
            let path = env_path("HF_TOKEN_PATH").or_else(|| hf_home().map(|h| h.join("token")))?;
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        })
}

/// `$HF_ENDPOINT` without a trailing slash, else `https://huggingface.co`.
pub fn endpoint() -> String {
    env_value("HF_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// `<cache>/models--org--name`.
fn repo_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// The snapshot of `repo_id` at `revision` (a branch or tag recorded in `refs/`, or a commit)
/// if the cache has one.
pub fn cached_snapshot(repo_id: &str, revision: &str) -> Option<PathBuf> {
    let repo = repo_dir(&cache_dir()?, repo_id);
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// One file of the repo listing.
#[derive(Clone, Debug, Default)]
struct RemoteFile {
    size: Option<u64>,
    /// The name its blob has in the cache: the LFS sha256, else the git blob id.
    blob: Option<String>,
}

/// What ti-xla fetches from a repo: files known from the listing, and shard indexes whose
/// shards are known once the index is read, as (component folder, index file).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<String>,
    pub indexes: Vec<(String, String)>,
}

/// Picks the files ti-xla needs from a repo's file names (`has`), or says which is missing
/// and what to do. `what` names the repo and revision in the messages.
pub fn plan(has: &dyn Fn(&str) -> bool, variant: Option<&str>, what: &str) -> Result<Plan> {
    if !has("model_index.json") {
        bail!("{what} has no model_index.json: ti-xla needs a diffusers pipeline repo (model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/)");
    }
    let mut files: Vec<String> = Vec::new();
    for name in REQUIRED {
        if !has(name) {
            bail!("{what} has no {name}; is it a diffusers Stable Diffusion pipeline?");
        }
        files.push(name.to_string());
    }
    let tokenizer_ok = has("tokenizer/tokenizer.json")
        || (has("tokenizer/vocab.json") && has("tokenizer/merges.txt"));
    if !tokenizer_ok {
        bail!("{what} has no tokenizer/vocab.json + tokenizer/merges.txt (nor tokenizer/tokenizer.json)");
    }
    files.extend(TOKENIZER.iter().filter(|n| has(n)).map(|n| n.to_string()));
    // SDXL: a second text encoder and its tokenizer.
    let sdxl = has("text_encoder_2/config.json");
    if sdxl {
        let tokenizer_2_ok = has("tokenizer_2/tokenizer.json")
            || (has("tokenizer_2/vocab.json") && has("tokenizer_2/merges.txt"));
        if !tokenizer_2_ok {
            bail!("{what} has text_encoder_2/ but no tokenizer_2/vocab.json + tokenizer_2/merges.txt (nor tokenizer_2/tokenizer.json)");
        }
        files.push("text_encoder_2/config.json".to_string());
        files.extend(
            TOKENIZER
                .iter()
                .map(|n| n.replacen("tokenizer/", "tokenizer_2/", 1))
                .filter(|n| has(n)),
        );
    }
    let mut indexes = Vec::new();
    for component in Component::ALL {
        if component == Component::TextEncoder2 && !sdxl {
            continue;
        }
        let (dir, stem) = (component.folder_name(), component.file_stem());
        let (single, index_names) = weight_file_names(stem, variant);
        let path = |name: &str| format!("{dir}/{name}");
        if has(&path(&single)) {
            files.push(path(&single));
            continue;
        }
        if let Some(index) = index_names.iter().map(|n| path(n)).find(|p| has(p)) {
            files.push(index.clone());
            indexes.push((dir.to_string(), index));
            continue;
        }
        let wanted = path(&single);
        let (plain, plain_indexes) = weight_file_names(stem, None);
        let plain_file = std::iter::once(plain)
            .chain(plain_indexes)
            .map(|n| path(&n))
            .find(|p| has(p));
        if let (Some(v), Some(plain)) = (variant, &plain_file) {
            bail!("{what} has no {wanted} (variant {v}); drop --variant {v}: the repo has {plain}");
        }
        if variant.is_none() && has(&path(&format!("{stem}.fp16.safetensors"))) {
            bail!("{what} has no {wanted}, only the fp16 variant: pass --variant fp16");
        }
        let bins: Vec<String> = match variant {
            Some(v) => vec![format!("{stem}.{v}.bin"), format!("{stem}.bin")],
            None => vec![format!("{stem}.bin")],
        }
        .into_iter()
        .chain(["bin.index.json".to_string()].map(|e| format!("{stem}.{e}")))
        .map(|n| path(&n))
        .filter(|p| has(p))
        .collect();
        if let Some(bin) = bins.first() {
            bail!("{what} has only PyTorch .bin weights for {dir} ({bin}); ti-xla reads safetensors and {wanted} is missing: use a revision or copy of the model with safetensors weights");
        }
        let variant_note = variant.map_or(String::new(), |v| format!(" (variant {v})"));
        bail!("{what} has no {wanted}{variant_note}");
    }
    Ok(Plan { files, indexes })
}

/// Checks that a snapshot already on disk has every file ti-xla needs (by the rules of
/// [`plan`], shards included); the error names the first one missing.
pub fn check_snapshot(snapshot: &Path, variant: Option<&str>, what: &str) -> Result<()> {
    let has = |name: &str| snapshot.join(name).is_file();
    let plan = plan(&has, variant, what)?;
    for (dir, index) in &plan.indexes {
        for shard in shard_names(&snapshot.join(index))? {
            let name = format!("{dir}/{shard}");
            if !has(&name) {
                bail!("{what} has no {name} (listed in {index})");
            }
        }
    }
    Ok(())
}

/// Downloads what ti-xla needs of `repo_id` at `revision` into the Hugging Face cache (files
/// already there are kept) and returns the snapshot folder. When the Hub cannot be reached
/// and the cache has a complete snapshot for the revision, that snapshot is used (with a
/// warning).
pub fn download(repo_id: &str, revision: &str, variant: Option<&str>) -> Result<PathBuf> {
    let hub = Hub::from_env(repo_id, revision)?;
    match hub.download(variant) {
        Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
            let Some(snapshot) = cached_snapshot(repo_id, revision) else {
                return Err(e);
            };
            // Only a complete copy will do (an interrupted download of a commit leaves a
            // snapshot folder with some of the files).
            if check_snapshot(&snapshot, variant, &hub.what()).is_err() {
                return Err(e);
            }
            eprintln!(
                "warning: {e:#}; using the copy in the Hugging Face cache ({})",
                snapshot.display()
            );
            Ok(snapshot)
        }
        other => other,
    }
}

struct Hub {
    endpoint: String,
    cache: PathBuf,
    repo_id: String,
    revision: String,
    has_token: bool,
    api: Api,
}

struct Listing {
    commit: String,
    files: BTreeMap<String, RemoteFile>,
}

impl Hub {
    fn from_env(repo_id: &str, revision: &str) -> Result<Self> {
        let cache = cache_dir()
            .context("cannot find the Hugging Face cache folder: set HF_HOME (or HF_HUB_CACHE)")?;
        let endpoint = endpoint();
        let token = token();
        let has_token = token.is_some();
        let api = ApiBuilder::from_cache(Cache::new(cache.clone()))
            .with_endpoint(endpoint.clone())
            .with_token(token)
            .with_progress(false)
            .with_retries(RETRIES)
            .with_user_agent("ti-xla", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| anyhow!("cannot set up the Hugging Face Hub client: {e}"))?;
        Ok(Hub {
            endpoint,
            cache,
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
            has_token,
            api,
        })
    }

    fn repo_at(&self, revision: &str) -> ApiRepo {
        self.api.repo(Repo::with_revision(
            self.repo_id.clone(),
            RepoType::Model,
            revision.to_string(),
        ))
    }

    fn what(&self) -> String {
        format!("{} at revision {}", self.repo_id, self.revision)
    }

    fn download(&self, variant: Option<&str>) -> Result<PathBuf> {
        let listing = self.listing()?;
        let plan = plan(
            &|name: &str| listing.files.contains_key(name),
            variant,
            &self.what(),
        )?;
        let repo_dir = repo_dir(&self.cache, &self.repo_id);
        let snapshot = repo_dir.join("snapshots").join(&listing.commit);
        // hf-hub records the revision it downloads at in refs/; files are fetched at the commit
        // (so they all come from one), and huggingface_hub keeps no ref named by a commit.
        let commit_ref = repo_dir.join("refs").join(&listing.commit);
        let commit_ref_existed = commit_ref.exists();
        let pinned = self.repo_at(&listing.commit);
        let mut announced = false;
        let mut fetch = |name: &str| -> Result<()> {
            let remote = listing.files.get(name).cloned().unwrap_or_default();
            self.fetch(&pinned, &repo_dir, &snapshot, name, &remote, &mut announced)
        };
        for name in &plan.files {
            fetch(name)?;
        }
        for (dir, index) in &plan.indexes {
            for shard in shard_names(&snapshot.join(index))? {
                let name = format!("{dir}/{shard}");
                if !listing.files.contains_key(&name) {
                    bail!(
                        "{index} of {} lists {name}, which the repo does not have",
                        self.what()
                    );
                }
                fetch(&name)?;
            }
        }
        if self.revision != listing.commit {
            Cache::new(self.cache.clone())
                .repo(Repo::with_revision(
                    self.repo_id.clone(),
                    RepoType::Model,
                    self.revision.clone(),
                ))
                .create_ref(&listing.commit)
                .with_context(|| {
                    format!(
                        "cannot record revision {} in {}",
                        self.revision,
                        repo_dir.display()
                    )
                })?;
        }
        if !commit_ref_existed {
            let _ = std::fs::remove_file(&commit_ref);
        }
        Ok(snapshot)
    }

    /// The repo's commit at the revision and its files with their sizes and blob names.
    fn listing(&self) -> Result<Listing> {
        // The first request: an endpoint that accepts and never answers is found here, after
        // the timeout; transient failures (unreachable, 5xx) are tried again a few times.
        let timeout = request_timeout();
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let result = self
                .repo_at(&self.revision)
                .info_request()
                .timeout(timeout)
                .query("blobs", "true")
                .call()
                .map_err(|e| self.http_error(e, None));
            match result {
                Err(e) if e.downcast_ref::<Unreachable>().is_some() && tries < LISTING_TRIES => {
                    std::thread::sleep(Duration::from_millis(500 << tries));
                }
                other => break other?,
            }
        };
        let json: serde_json::Value = response.into_json().map_err(|e| {
            anyhow!(
                "the file list of {} from {} is not valid JSON ({e})",
                self.what(),
                self.endpoint
            )
        })?;
        let commit = json["sha"]
            .as_str()
            .with_context(|| {
                format!(
                    "the file list of {} from {} has no commit (sha)",
                    self.what(),
                    self.endpoint
                )
            })?
            .to_string();
        if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!(
                "the file list of {} from {} names an odd commit: {commit:?}",
                self.what(),
                self.endpoint
            );
        }
        let mut files = BTreeMap::new();
        for sibling in json["siblings"].as_array().into_iter().flatten() {
            let Some(name) = sibling["rfilename"].as_str() else {
                continue;
            };
            let lfs = &sibling["lfs"];
            files.insert(
                name.to_string(),
                RemoteFile {
                    size: lfs["size"].as_u64().or(sibling["size"].as_u64()),
                    blob: lfs["sha256"]
                        .as_str()
                        .or(sibling["blobId"].as_str())
                        .filter(|b| !b.is_empty() && !b.contains(['/', '\\', '.']))
                        .map(str::to_string),
                },
            );
        }
        Ok(Listing { commit, files })
    }

    /// Makes `snapshot/name` a complete copy of the remote file: kept if it is one already,
    /// linked to a blob the cache already has, else downloaded.
    fn fetch(
        &self,
        repo: &ApiRepo,
        repo_dir: &Path,
        snapshot: &Path,
        name: &str,
        remote: &RemoteFile,
        announced: &mut bool,
    ) -> Result<()> {
        let target = snapshot.join(name);
        let commit = snapshot.file_name().unwrap_or_default().to_string_lossy();
        let complete = |p: &Path| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && remote.size.is_none_or(|s| m.len() == s))
        };
        if complete(&target) {
            return Ok(());
        }
        if target.symlink_metadata().is_ok() {
            // A link to a blob of the wrong size (or none): fetch it again.
            std::fs::remove_file(&target)
                .with_context(|| format!("cannot replace {}", target.display()))?;
        }
        if let Some(blob) = &remote.blob {
            let blob_path = repo_dir.join("blobs").join(blob);
            if complete(&blob_path) && link_blob(&blob_path, &target, name).is_ok() {
                return Ok(());
            }
            // A partial download as large as the whole file cannot be resumed.
            let part = blob_path.with_extension("part");
            if let (Ok(m), Some(size)) = (std::fs::metadata(&part), remote.size) {
                if m.len() >= size {
                    let _ = std::fs::remove_file(&part);
                }
            }
        }
        if !*announced {
            *announced = true;
            let short: String = commit.chars().take(12).collect();
            eprintln!(
                "Downloading {} (commit {short}) into {}",
                self.what(),
                self.cache.display()
            );
        }
        let large = remote.size.is_none_or(|s| s >= BAR_FROM_BYTES)
            && !env_true("HF_HUB_DISABLE_PROGRESS_BARS");
        let result = if large {
            repo.download_with_progress(name, ProgressBar::new(0))
        } else {
            repo.download_with_progress(name, ())
        };
        let path = result.map_err(|e| self.api_error(e, name))?;
        if path != target {
            bail!(
                "{} sent {name} of {} from another commit than {commit} ({}); run again",
                self.endpoint,
                self.repo_id,
                path.display()
            );
        }
        let got = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = remote.size.filter(|&s| s != got) {
            let blob = std::fs::canonicalize(&path).ok();
            let _ = std::fs::remove_file(&path);
            if let Some(blob) = blob {
                let _ = std::fs::remove_file(blob);
            }
            bail!(
                "the download of {name} from {} ended at {got} of {size} bytes; run again",
                self.what()
            );
        }
        Ok(())
    }

    fn api_error(&self, e: ApiError, file: &str) -> anyhow::Error {
        match e {
            ApiError::RequestError(e) => self.http_error(*e, Some(file)),
            ApiError::TooManyRetries(e) => self.api_error(*e, file),
            ApiError::IoError(e) => anyhow::Error::new(Unreachable(format!(
                "the download of {file} from {} stopped ({}); run again to resume it, or set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache",
                self.what(),
                one_line(&e.to_string())
            ))),
            ApiError::MissingHeader(h) => anyhow!(
                "{} sent no {h} header for {file} of {}; is HF_ENDPOINT a Hugging Face Hub?",
                self.endpoint,
                self.repo_id
            ),
            ApiError::LockAcquisition(lock) => anyhow!(
                "another process is downloading {file} of {} (lock {}); wait for it to finish",
                self.repo_id,
                lock.display()
            ),
            other => anyhow!(
                "cannot download {file} from {}: {}",
                self.what(),
                one_line(&other.to_string())
            ),
        }
    }

    /// One line for a failed request: unreachable, not found, gated or refused.
    fn http_error(&self, e: ureq::Error, file: Option<&str>) -> anyhow::Error {
        let repo = &self.repo_id;
        let (status, response) = match e {
            ureq::Error::Transport(t) => {
                return anyhow::Error::new(Unreachable(format!(
                    "cannot reach {} to download {repo} ({}); without network, set HF_HUB_OFFLINE=1 and use a copy already in the Hugging Face cache (fetched with `huggingface-cli download {repo}` where there is network)",
                    self.endpoint,
                    one_line(&t.to_string())
                )))
            }
            ureq::Error::Status(status, response) => (status, response),
        };
        let code = response.header("x-error-code").unwrap_or("").to_string();
        let login = if self.has_token {
            "the token in use (HF_TOKEN, or the one `huggingface-cli login` saved) has no access to it"
        } else {
            "log in with `huggingface-cli login` or set HF_TOKEN"
        };
        match (status, code.as_str(), file) {
            (_, "GatedRepo", _) if self.has_token => anyhow!(
                "{repo} is a gated model and the token in use (HF_TOKEN, or the one `huggingface-cli login` saved) has no access to it: accept its conditions on {}/{repo} with that account",
                self.endpoint
            ),
            (_, "GatedRepo", _) => anyhow!(
                "{repo} is a gated model: accept its conditions on {}/{repo}, then log in with `huggingface-cli login` or set HF_TOKEN",
                self.endpoint
            ),
            (401, "", _) if self.has_token => anyhow!(
                "{} did not accept the token in use for {repo} (401; HF_TOKEN, or the one `huggingface-cli login` saved): log in again or set HF_TOKEN to a valid token",
                self.endpoint
            ),
            (_, "RepoNotFound", _) | (401 | 404, "", None) => anyhow!(
                "repository {repo} not found at {} (check the id; a private repo needs `huggingface-cli login` or HF_TOKEN)",
                self.endpoint
            ),
            (_, "RevisionNotFound", _) => {
                anyhow!("revision {} not found in {repo}", self.revision)
            }
            (404, _, Some(file)) => anyhow!("{file} not found in {}", self.what()),
            (401 | 403, _, _) => anyhow!(
                "{} refused access to {repo} ({status}): {login}",
                self.endpoint
            ),
            (500..=599, _, _) => anyhow::Error::new(Unreachable(format!(
                "{} answered {status} for {} of {repo}; try again later, or set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache",
                self.endpoint,
                file.unwrap_or("the file list")
            ))),
            _ => anyhow!(
                "{} answered {status} for {} of {repo}",
                self.endpoint,
                file.unwrap_or("the file list")
            ),
        }
    }
}

/// Links `target` (in a snapshot) to a blob the cache already holds, relative as
/// huggingface_hub links them.
fn link_blob(blob: &Path, target: &Path, name: &str) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    #[cfg(unix)]
    {
        let up = "../".repeat(name.split('/').count() + 1);
        let blob_name = blob.file_name().expect("a blob has a name");
        std::os::unix::fs::symlink(Path::new(&up).join("blobs").join(blob_name), target)
    }
    #[cfg(not(unix))]
    {
        let _ = name;
        std::fs::copy(blob, target).map(|_| ())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo<'a>(files: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |name: &str| files.contains(&name)
    }

    const BASE: [&str; 9] = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "unet/config.json",
        "vae/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ];

    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn picks_plain_variant_and_sharded_weights() {
        let files = with(&[
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "safety_checker/model.safetensors",
        ]);
        let plain = plan(&repo(&files), None, "r").unwrap();
        assert!(plain
            .files
            .contains(&"unet/diffusion_pytorch_model.safetensors".into()));
        assert!(plain.indexes.is_empty());
        assert!(!plain
            .files
            .iter()
            .any(|f| f.contains("safety_checker") || f.ends_with(".bin")));
        assert_eq!(plain.files.len(), BASE.len() + 3);

        let fp16 = plan(&repo(&files), Some("fp16"), "r").unwrap();
        assert!(fp16
            .files
            .contains(&"text_encoder/model.fp16.safetensors".into()));
        assert_eq!(
            fp16.indexes,
            vec![(
                "unet".to_string(),
                "unet/diffusion_pytorch_model.safetensors.index.fp16.json".to_string()
            )]
        );
    }

    #[test]
    fn missing_weights_say_what_to_do() {
        let plain_only = with(&[
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ]);
        let err = plan(&repo(&plain_only), Some("fp16"), "r")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("text_encoder/model.fp16.safetensors")
                && err.contains("drop --variant fp16"),
            "{err}"
        );
        let fp16_only = with(&[
            "text_encoder/model.fp16.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]);
        let err = plan(&repo(&fp16_only), None, "r").unwrap_err().to_string();
        assert!(err.contains("pass --variant fp16"), "{err}");
        let bin = with(&[
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors",
        ]);
        let err = plan(&repo(&bin), None, "r").unwrap_err().to_string();
        assert!(
            err.contains("unet/diffusion_pytorch_model.bin")
                && err.contains("unet/diffusion_pytorch_model.safetensors is missing"),
            "{err}"
        );
        let err = plan(&repo(&["unet/config.json"]), None, "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no model_index.json"), "{err}");
    }

    #[test]
    fn tokenizer_json_alone_is_enough() {
        let files: Vec<&str> = BASE
            .iter()
            .copied()
            .filter(|f| !f.ends_with("vocab.json") && !f.ends_with("merges.txt"))
            .chain([
                "tokenizer/tokenizer.json",
                "text_encoder/model.safetensors",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ])
            .collect();
        let p = plan(&repo(&files), None, "r").unwrap();
        assert!(p.files.contains(&"tokenizer/tokenizer.json".into()));
        let no_tokenizer: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !f.ends_with("tokenizer.json"))
            .collect();
        assert!(plan(&repo(&no_tokenizer), None, "r").is_err());
    }

    #[test]
    fn sdxl_repos_also_fetch_the_second_encoder_and_tokenizer() {
        let files = with(&[
            "text_encoder/model.fp16.safetensors",
            "text_encoder_2/config.json",
            "text_encoder_2/model.fp16.safetensors",
            "text_encoder_2/model.safetensors",
            "tokenizer_2/vocab.json",
            "tokenizer_2/merges.txt",
            "tokenizer_2/special_tokens_map.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]);
        let p = plan(&repo(&files), Some("fp16"), "r").unwrap();
        for f in [
            "text_encoder_2/config.json",
            "text_encoder_2/model.fp16.safetensors",
            "tokenizer_2/vocab.json",
            "tokenizer_2/merges.txt",
            "tokenizer_2/special_tokens_map.json",
        ] {
            assert!(p.files.contains(&f.to_string()), "{f}: {:?}", p.files);
        }
        assert!(!p.files.contains(&"text_encoder_2/model.safetensors".into()));
        let no_tokenizer_2: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !f.starts_with("tokenizer_2"))
            .collect();
        let err = plan(&repo(&no_tokenizer_2), Some("fp16"), "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer_2/vocab.json"), "{err}");
        let no_weights: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !f.starts_with("text_encoder_2/model"))
            .collect();
        let err = plan(&repo(&no_weights), Some("fp16"), "r")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("text_encoder_2/model.fp16.safetensors"),
            "{err}"
        );
    }
}
