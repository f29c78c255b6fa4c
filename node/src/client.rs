//! The CLI's client of a running node's local API: address and token come from
//! `node.toml` and the tokens file it names.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tamga_config::NodeConfig;

use crate::identity::{Role, Tokens};

/// How long one API call may take before the CLI gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to the node failed; each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("cannot reach the node at {url} ({why}); is `tamga run` running with this node.toml?")]
    Unreachable {
        /// The address tried.
        url: String,
        /// The cause.
        why: String,
    },
    /// The node answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The node's message.
        message: String,
        /// Details (per-record errors).
        details: Option<Value>,
    },
    /// Setting up the client failed.
    #[error("{0}")]
    Setup(String),
}

/// A client bound to one node and one role.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// Build a client for the node described by `config`, with the token of `role`.
    pub fn new(config: &NodeConfig, role: Role) -> Result<Client, ClientError> {
        let tokens = Tokens::load(&config.tokens).map_err(|e| ClientError::Setup(e.to_string()))?;
        let mut addr = config.api.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        let scheme = match &config.api.tls_cert {
            Some(cert) => {
                let pem = std::fs::read(cert)
                    .map_err(|e| ClientError::Setup(format!("{}: {e}", cert.display())))?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| ClientError::Setup(format!("{}: {e}", cert.display())))?;
                builder = builder.add_root_certificate(cert).tls_built_in_root_certs(false);
                "https"
            }
            None => "http",
        };
        let http = builder.build().map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client { base: format!("{scheme}://{addr}"), token: tokens.token(role).to_owned(), http })
    }

    /// A client for an explicit base URL and token (tests, scripts).
    pub fn with_token(base: impl Into<String>, token: impl Into<String>) -> Client {
        Client { base: base.into(), token: token.into(), http: reqwest::Client::new() }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            why: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            message: body["error"].as_str().unwrap_or("no message").to_owned(),
            details: body.get("details").cloned(),
        })
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let resp = self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await?;
        resp.json().await.map_err(|e| ClientError::Setup(format!("bad response: {e}")))
    }

    /// GET an audit query's or trace's entries, and whether the node says more match than
    /// it sent ([`crate::api::MORE_ENTRIES_HEADER`]).
    pub async fn get_entries(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Value, bool), ClientError> {
        let resp = self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await?;
        let more = resp.headers().get(crate::api::MORE_ENTRIES_HEADER).is_some_and(|v| v == "true");
        let v = resp.json().await.map_err(|e| ClientError::Setup(format!("bad response: {e}")))?;
        Ok((v, more))
    }

    /// GET raw bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(self.http.get(format!("{}{path}", self.base))).await?;
        resp.bytes().await.map(|b| b.to_vec()).map_err(|e| ClientError::Setup(format!("bad response: {e}")))
    }

    /// POST a JSON document.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let resp = self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await?;
        resp.json().await.map_err(|e| ClientError::Setup(format!("bad response: {e}")))
    }
}
