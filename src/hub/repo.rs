//! The model repo a push goes to: the token's user (`GET /api/whoami-v2`), the repo id a push
//! names or defaults to, and the repo itself, created (`POST /api/repos/create`) when
//! `GET /api/models/{id}` says it does not exist.

use anyhow::{bail, Result};

use super::http::HubClient;

/// The user the token belongs to; also checks that the Hub accepts the token before anything
/// is sent.
pub fn whoami(hub: &HubClient) -> Result<String> {
    let body = hub
        .call(|| {
            hub.request("GET", "/api/whoami-v2")
                .call()
                .map_err(Box::new)
        })
        .map_err(|f| hub.error(&f, "say whose token it is"))?;
    let name = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => Ok(name),
        None => bail!(
            "{} answered /api/whoami-v2 without a user name; is HF_ENDPOINT a Hugging Face Hub?",
            hub.endpoint
        ),
    }
}

/// `namespace/name`: `--hub-model-id` as given, a bare name under `user`, or (none given) the
/// output folder's name under `user`.
pub fn repo_id(given: Option<&str>, output_folder_name: &str, user: &str) -> Result<String> {
    let id = match given {
        Some(id) if id.contains('/') => id.to_string(),
        Some(name) => format!("{user}/{name}"),
        None => format!("{user}/{output_folder_name}"),
    };
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.ends_with(['.', '-'])
            && !p.contains("--")
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match id.split_once('/') {
        Some((ns, name)) if valid_part(ns) && valid_part(name) => Ok(id),
        _ => bail!(
            "{id:?} is not a Hub repo id (namespace/name of letters, digits, '-', '_', '.'); pass --hub-model-id user/name"
        ),
    }
}

/// Creates `repo_id` (private when asked) unless it exists; returns whether it was created.
pub fn ensure_repo(hub: &HubClient, repo_id: &str, private: bool) -> Result<bool> {
    let exists = hub.call(|| {
        hub.request("GET", &format!("/api/models/{repo_id}"))
            .call()
            .map_err(Box::new)
    });
    match exists {
        Ok(_) => return Ok(false),
        Err(f) if f.status == Some(404) => {}
        Err(f) => return Err(hub.error(&f, &format!("look up the repo {repo_id}"))),
    }
    let (namespace, name) = repo_id.split_once('/').unwrap_or(("", repo_id));
    let body = serde_json::json!({
        "type": "model",
        "name": name,
        "organization": namespace,
        "private": private,
    })
    .to_string();
    let created = hub.call(|| {
        hub.request("POST", "/api/repos/create")
            .set("Content-Type", "application/json")
            .send_string(&body)
            .map_err(Box::new)
    });
    match created {
        Ok(_) => Ok(true),
        // Created meanwhile (another push).
        Err(f) if f.status == Some(409) => Ok(false),
        Err(f) => Err(hub.error(&f, &format!("create the repo {repo_id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_default_to_the_users_namespace() {
        assert_eq!(repo_id(None, "my-mug", "me").unwrap(), "me/my-mug");
        assert_eq!(repo_id(Some("mug"), "x", "me").unwrap(), "me/mug");
        assert_eq!(repo_id(Some("org/mug"), "x", "me").unwrap(), "org/mug");
        assert!(repo_id(None, "a b", "me").is_err());
        assert!(repo_id(Some("a/b/c"), "x", "me").is_err());
    }
}
