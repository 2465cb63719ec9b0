//! The flags that say where a push goes, shared by `ti-xla train --push-to-hub` and
//! `ti-xla push`, with the snake_case spellings of diffusers' `textual_inversion.py`.

/// Where to push and as whom.
#[derive(Clone, Default, clap::Args)]
pub struct HubArgs {
    /// Model repo to push to, `user/name` or `org/name` [default: the output folder's name,
    /// under the token's user]; a bare name goes under the token's user too.
    #[arg(long = "hub-model-id", alias = "hub_model_id", value_name = "REPO_ID")]
    pub hub_model_id: Option<String>,
    /// Hub token with write access [default: HF_TOKEN, else the token `huggingface-cli login`
    /// saved]. Never printed.
    #[arg(
        long = "hub-token",
        alias = "hub_token",
        value_name = "TOKEN",
        hide_default_value = true
    )]
    pub hub_token: Option<String>,
    /// Create the repo private when it does not exist yet (an existing repo keeps its
    /// visibility).
    #[arg(long = "hub-private", alias = "hub_private")]
    pub hub_private: bool,
}

/// The token stays out of debug output.
impl std::fmt::Debug for HubArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubArgs")
            .field("hub_model_id", &self.hub_model_id)
            .field("hub_token", &self.hub_token.as_ref().map(|_| "<hidden>"))
            .field("hub_private", &self.hub_private)
            .finish()
    }
}
