//! The HTTP side of a push: one `ureq` agent with the download code's timeout
//! (`TI_XLA_HUB_TIMEOUT_SECS`), the token sent only to the Hub's own host, a bounded number of
//! tries for transient failures (no answer, 429, 5xx), and each failure turned into one line
//! that says what to do. The token never appears in a message.

use std::time::Duration;

use crate::model::hub::request_timeout;

/// Tries of one request before a transient failure counts as final.
pub const TRIES: u32 = 3;

/// The pause before try `n + 1` (n from 1): `TI_XLA_HUB_RETRY_SECS` (default 1 s) doubled each
/// time.
fn pause(n: u32) -> Duration {
    let base = std::env::var("TI_XLA_HUB_RETRY_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(base * f64::from(1u32 << (n - 1).min(6)))
}

/// A Hub endpoint and the token a push uses there.
pub struct HubClient {
    agent: ureq::Agent,
    pub endpoint: String,
    token: String,
}

/// A request that failed for good: its status (none: no answer), the Hub's error code and
/// message.
#[derive(Debug)]
pub struct Failure {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub tries: u32,
}

impl HubClient {
    pub fn new(endpoint: &str, token: &str) -> HubClient {
        // Idle timeouts (connect, each read, each write), not one for the whole request: an
        // LFS upload of a pipeline's UNet takes minutes, a stalled connection still ends.
        let idle = request_timeout();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(idle)
            .timeout_read(idle)
            .timeout_write(idle)
            .user_agent(&format!("ti-xla/{}", env!("CARGO_PKG_VERSION")))
            .build();
        HubClient {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// A request to `url` (absolute, or a path on the endpoint), with the token when the URL
    /// is on the endpoint's host: an LFS storage URL elsewhere never sees it.
    pub fn request(&self, method: &str, url: &str) -> ureq::Request {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.endpoint)
        } else {
            url.to_string()
        };
        let on_hub = url == self.endpoint || url.starts_with(&format!("{}/", self.endpoint));
        let request = self.agent.request(method, &url);
        if on_hub {
            request.set("Authorization", &format!("Bearer {}", self.token))
        } else {
            request
        }
    }

    /// A request to an LFS storage URL (the `href` of an upload action): presigned, so it
    /// never carries the token, wherever it points.
    pub fn storage_request(&self, method: &str, url: &str) -> ureq::Request {
        self.agent.request(method, url)
    }

    /// Runs `send` (a request sent, its error boxed: `ureq::Error` is large) until it succeeds, fails for good, or has been tried [`TRIES`] times
    /// (transient failures only); returns the response body.
    pub fn call(
        &self,
        send: impl Fn() -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<String, Failure> {
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match send() {
                Ok(response) => match response.into_string() {
                    Ok(body) => return Ok(body),
                    Err(e) => Failure {
                        status: None,
                        code: String::new(),
                        message: e.to_string(),
                        tries,
                    },
                },
                Err(e) => match *e {
                    ureq::Error::Status(status, response) => {
                        let code = response.header("x-error-code").unwrap_or("").to_string();
                        let body = response.into_string().unwrap_or_default();
                        Failure {
                            status: Some(status),
                            code,
                            message: self.error_message(&body),
                            tries,
                        }
                    }
                    ureq::Error::Transport(t) => Failure {
                        status: None,
                        code: String::new(),
                        message: self.scrub(&t.to_string()),
                        tries,
                    },
                },
            };
            let transient = failure
                .status
                .is_none_or(|s| s == 429 || (500..=599).contains(&s));
            if !transient || tries >= TRIES {
                return Err(failure);
            }
            std::thread::sleep(pause(tries));
        }
    }

    /// The Hub's `{"error": ...}`, else the start of the body, on one line.
    fn error_message(&self, body: &str) -> String {
        let text = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        self.scrub(&text)
    }

    /// `text` on one line, without the token.
    fn scrub(&self, text: &str) -> String {
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.token.is_empty() {
            line
        } else {
            line.replace(&self.token, "<token>")
        }
    }

    /// The one-line error for a request that failed while trying to `what` (e.g. "create the
    /// repo user/name").
    pub fn error(&self, failure: &Failure, what: &str) -> anyhow::Error {
        let endpoint = &self.endpoint;
        let detail = if failure.message.is_empty() {
            String::new()
        } else {
            format!(": {}", failure.message)
        };
        let tries = failure.tries;
        let times = if tries == 1 {
            String::new()
        } else {
            format!(" {tries} times")
        };
        match failure.status {
            None => anyhow::anyhow!(
                "cannot reach {endpoint} to {what}{times} ({}); check the network (each request waits TI_XLA_HUB_TIMEOUT_SECS, default 60 s)",
                failure.message
            ),
            Some(401) => anyhow::anyhow!(
                "{endpoint} did not accept the Hub token (401, asked to {what}): log in again with `huggingface-cli login`, or set HF_TOKEN or --hub-token to a token with write access"
            ),
            Some(403) => anyhow::anyhow!(
                "{endpoint} refused to {what} (403{detail}): the token needs write access (make one at {endpoint}/settings/tokens)"
            ),
            Some(s) if s == 429 || (500..=599).contains(&s) => {
                anyhow::anyhow!("{endpoint} answered {s}{times} to {what}{detail}; try again later")
            }
            Some(s) => anyhow::anyhow!("{endpoint} answered {s} to {what}{detail}"),
        }
    }
}
