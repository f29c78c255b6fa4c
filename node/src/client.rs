//! The CLI's client of a running node's local API: address and token come from
//! `node.toml` and the tokens file it names.
//!
//! An API call is bounded as a whole ([`REQUEST_TIMEOUT`]); a download (a backup) is not,
//! since its length has no bound, only each wait for its next bytes
//! ([`DOWNLOAD_IDLE_TIMEOUT`]).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tamga_config::NodeConfig;

use crate::identity::{Role, Tokens};

/// How long one API call may take before the CLI gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a download may wait for its next bytes, the first included. Long, since the
/// node builds a backup whole before it sends its first byte.
pub const DOWNLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

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
    /// The node took the request but sent nothing more within a timeout: it is running,
    /// and slow or stuck.
    #[error("timed out: the node at {url} {what}")]
    TimedOut {
        /// The address asked.
        url: String,
        /// What it did not do in time.
        what: String,
    },
    /// Setting up the client failed.
    #[error("{0}")]
    Setup(String),
}

/// An error and its sources as one line: reqwest's own text ("error decoding response
/// body") says least, its sources say why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_line = cause.to_string();
        if !line.ends_with(&cause_line) {
            line.push_str(": ");
            line.push_str(&cause_line);
        }
        source = cause.source();
    }
    line
}

/// A body that could not be read, with the causes.
fn bad_response(e: reqwest::Error) -> ClientError {
    ClientError::Setup(format!("bad response: {}", chain(&e)))
}

/// A client bound to one node and one role.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    /// The bound on an API call as a whole ([`REQUEST_TIMEOUT`]; none for
    /// [`Client::with_token`]).
    request_timeout: Option<Duration>,
    /// The bound on each wait of a download ([`DOWNLOAD_IDLE_TIMEOUT`]).
    idle_timeout: Duration,
}

/// Without the token: a client printed in a log or an error must not carry it.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"…").finish_non_exhaustive()
    }
}

impl Client {
    /// Build a client for the node described by `config`, with the token of `role`.
    pub fn new(config: &NodeConfig, role: Role) -> Result<Client, ClientError> {
        let tokens = Tokens::load(&config.tokens).map_err(|e| ClientError::Setup(e.to_string()))?;
        Client::for_node(config, tokens.token(role).to_owned())
    }

    /// Build a client for the node described by `config`, with a token given apart from
    /// the node's tokens file: the one in `file` (its owner's alone, as the tokens file is),
    /// for a user given only their role's token.
    pub fn with_token_file(config: &NodeConfig, file: &std::path::Path) -> Result<Client, ClientError> {
        let text = crate::identity::read_secret_file(file).map_err(|e| ClientError::Setup(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ClientError::Setup(format!("{}: holds no single token", file.display())));
        }
        Client::for_node(config, token.to_owned())
    }

    /// Build a client for the node described by `config`: with the token in `token_file`
    /// when one is given ([`Client::with_token_file`]), else with `role`'s from the node's
    /// tokens file ([`Client::new`]). What every command that calls the node uses.
    pub fn for_role(
        config: &NodeConfig,
        role: Role,
        token_file: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        match token_file {
            Some(file) => Client::with_token_file(config, file),
            None => Client::new(config, role),
        }
    }

    fn for_node(config: &NodeConfig, token: String) -> Result<Client, ClientError> {
        let mut addr = config.api.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        // No timeout on the whole here: a download has none (see `get_bytes`).
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
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
        Ok(Client {
            base: format!("{scheme}://{addr}"),
            token,
            http,
            request_timeout: Some(REQUEST_TIMEOUT),
            idle_timeout: DOWNLOAD_IDLE_TIMEOUT,
        })
    }

    /// A client for an explicit base URL and token (tests, scripts); its API calls have no
    /// timeout as a whole.
    pub fn with_token(base: impl Into<String>, token: impl Into<String>) -> Client {
        Client {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
            request_timeout: None,
            idle_timeout: DOWNLOAD_IDLE_TIMEOUT,
        }
    }

    /// This client with downloads waiting at most `idle` for their next bytes.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Client {
        self.idle_timeout = idle;
        self
    }

    /// Send an API call, bounded as a whole by the client's request timeout.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let req = match self.request_timeout {
            Some(t) => req.timeout(t),
            None => req,
        };
        self.answer(req.bearer_auth(&self.token).send().await).await
    }

    /// The node's answer to a request, or why there is none: a node that could not be
    /// reached is told apart from one that was, and then did not answer in time.
    async fn answer(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = sent.map_err(|e| {
            if e.is_timeout() && !e.is_connect() {
                let within = self.request_timeout.map_or_else(String::new, |t| format!(" within {t:?}"));
                return ClientError::TimedOut {
                    url: self.base.clone(),
                    what: format!("did not answer{within}"),
                };
            }
            ClientError::Unreachable {
                url: self.base.clone(),
                why: std::error::Error::source(&e).map_or_else(|| e.to_string(), chain),
            }
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
        resp.json().await.map_err(bad_response)
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
        let v = resp.json().await.map_err(bad_response)?;
        Ok((v, more))
    }

    /// GET raw bytes: a download, however long it takes as long as no wait for its next
    /// bytes (the first included) is longer than the idle timeout.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let idle = self.idle_timeout;
        let timed_out = |what: String| ClientError::TimedOut { url: self.base.clone(), what };
        let req = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send();
        let sent = tokio::time::timeout(idle, req)
            .await
            .map_err(|_| timed_out(format!("sent no answer to GET {path} for {idle:?}")))?;
        let mut resp = self.answer(sent).await?;
        let mut bytes = Vec::new();
        loop {
            let chunk = tokio::time::timeout(idle, resp.chunk()).await.map_err(|_| {
                timed_out(format!(
                    "sent nothing more of GET {path} for {idle:?}, {} bytes into it",
                    bytes.len()
                ))
            })?;
            match chunk.map_err(bad_response)? {
                Some(chunk) => bytes.extend_from_slice(&chunk),
                None => return Ok(bytes),
            }
        }
    }

    /// POST a JSON document.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let resp = self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await?;
        resp.json().await.map_err(bad_response)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_printed_does_not_show_its_token() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let c = Client::with_token("http://127.0.0.1:1", "s3cr3t-token-of-the-operator");
        let shown = format!("{c:?}");
        assert!(shown.contains("127.0.0.1:1") && !shown.contains("s3cr3t"), "{shown}");
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The base URL of a listener on 127.0.0.1:0 that reads a request, writes `answer`,
    /// and then sends nothing more, the connection held open while the test runs.
    async fn stalling(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(answer).await;
                held.push(conn);
            }
        });
        format!("http://{addr}")
    }

    // A node that answers a download's headers and then stalls, or sends no answer at
    // all, is running: the error says the download timed out, not that the node is down.
    #[tokio::test]
    async fn a_download_that_stalls_times_out_without_saying_the_node_is_down() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let headers = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                        content-length: 1000\r\n\r\nTAMGA-BACKUP\n";
        for (answer, says) in [(&headers[..], "13 bytes into it"), (&b""[..], "sent no answer")] {
            let client = Client::with_token(stalling(answer).await, "a token")
                .with_idle_timeout(Duration::from_millis(300));
            let e = tokio::time::timeout(Duration::from_secs(10), client.get_bytes("/v1/backup"))
                .await
                .expect("gives up within 10 s")
                .expect_err("times out")
                .to_string();
            assert!(e.contains("timed out") && e.contains(says), "{e}");
            assert!(!e.contains("tamga run") && !e.contains("cannot reach"), "{e}");
        }
    }
}
