//! Pushing training results to a Hugging Face Hub model repo (`ti-xla train --push-to-hub`,
//! `ti-xla push`), over the Hub's HTTP API with the blocking `ureq` client that downloads use
//! too. Downloads live in [`crate::model::hub`], whose environment (`HF_ENDPOINT`, `HF_TOKEN`
//! and the login token, `HF_HUB_OFFLINE`, `TI_XLA_HUB_TIMEOUT_SECS`) a push reads the same way.
//!
//! - `args`: the flags naming the repo, token and visibility;
//! - `http`: the client: token only to the Hub's host, bounded retries, one-line errors;
//! - `repo`: the token's user, the repo id, creating the repo when missing;
//! - `commit`: preupload, LFS upload of large files, and the commit itself;
//! - `model_card`: the `README.md` the push writes into the repo;
//! - `push`: what of an output folder goes up, and the push as a whole.

pub mod args;
pub mod commit;
pub mod http;
pub mod model_card;
pub mod push;
pub mod repo;
