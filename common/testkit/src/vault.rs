//! A small Vault transit server for fault injection: it answers a chosen
//! number of requests with 503 (`Vault is sealed`) and then serves, which a
//! real Vault or OpenBao ([`crate::openbao`], used for everything
//! else) cannot be made to do exactly. Written from Vault's API
//! documentation: the three endpoints Trireme calls, real AES-256-GCM
//! (aws-lc-rs) under versioned named keys, Vault's ciphertext format
//! (`vault:vN:` + base64 of nonce || ciphertext || tag), its JSON reply
//! envelope and its error shape (`{"errors": [...]}`). Plain HTTP.
//!
//! - `POST /v1/<mount>/datakey/plaintext/<name>` `{"bits":256}`: 400
//!   `encryption key not found` for an unknown key;
//! - `POST /v1/<mount>/encrypt/<name>` `{"plaintext":b64}`: creates the key
//!   when missing (Vault's upsert);
//! - `POST /v1/<mount>/decrypt/<name>` `{"ciphertext":"vault:vN:…"}`: 400
//!   `cipher: message authentication failed` under another key.
//!
//! A missing or wrong `X-Vault-Token` (or `X-Vault-Namespace`, when the
//! server has one) gets 403 `permission denied`; another mount 404.
//! [`VaultServer::fail_next`] makes the next requests answer 503
//! `Vault is sealed`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// What the server holds and how it behaves.
pub struct State {
    /// The token it accepts.
    pub token: String,
    /// The namespace requests must name, if any.
    pub namespace: Option<String>,
    /// The transit mount.
    pub mount: String,
    /// Named keys: versions 1.., oldest first.
    pub keys: Mutex<HashMap<String, Vec<[u8; 32]>>>,
    /// Answer this many more requests with 503.
    pub fail_next: AtomicU32,
    /// Requests seen.
    pub requests: AtomicU32,
}

/// A running server.
pub struct VaultServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).unwrap();
    b
}

impl State {
    /// A new state accepting `token`, mount `transit`.
    pub fn new(token: &str) -> Self {
        State {
            token: token.into(),
            namespace: None,
            mount: "transit".into(),
            keys: Mutex::default(),
            fail_next: AtomicU32::new(0),
            requests: AtomicU32::new(0),
        }
    }
}

impl VaultServer {
    /// Serve `state` over plain HTTP on 127.0.0.1.
    pub async fn start(state: State) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(state);
        let address = format!("http://127.0.0.1:{}", addr.port());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        VaultServer {
            addr,
            address,
            state,
            task,
        }
    }

    /// Create transit key `name` (version 1).
    pub fn create_key(&self, name: &str) {
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(name.into(), vec![random()]);
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u32 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn errors(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "errors": [msg] }))
}

/// Vault's envelope around `data`.
fn ok(data: Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        }),
    )
}

fn seal(key: &[u8; 32], version: usize, plain: &[u8]) -> String {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let nonce = random::<12>();
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    format!("vault:v{version}:{}", b64().encode(out))
}

async fn handle(st: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return errors(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed");
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if header("X-Vault-Token").as_deref() != Some(st.token.as_str())
        || header("X-Vault-Namespace") != st.namespace
    {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    let path = req.uri().path().to_string();
    if req.method() != hyper::Method::POST && req.method() != hyper::Method::PUT {
        return errors(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation");
    }
    let not_found = || {
        errors(
            StatusCode::NOT_FOUND,
            &format!(
                "no handler for route \"{}\". route entry not found.",
                path.trim_start_matches("/v1/")
            ),
        )
    };
    let Some(rest) = path
        .strip_prefix("/v1/")
        .and_then(|p| p.strip_prefix(st.mount.as_str()))
        .and_then(|p| p.strip_prefix('/'))
    else {
        return not_found();
    };
    let (op, name) = match rest.rsplit_once('/') {
        Some((op, name)) if !name.is_empty() => (op.to_string(), name.to_string()),
        _ => return not_found(),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return errors(StatusCode::BAD_REQUEST, "failed to read request body"),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return errors(StatusCode::BAD_REQUEST, "failed to parse JSON input");
    };
    let mut keys = st.keys.lock().unwrap();
    match op.as_str() {
        "datakey/plaintext" | "datakey/wrapped" => {
            let bits = body["bits"].as_u64().unwrap_or(256);
            if ![128, 256, 512].contains(&bits) {
                return errors(
                    StatusCode::BAD_REQUEST,
                    "invalid bits; must be 128, 256, or 512",
                );
            }
            let Some(versions) = keys.get(&name) else {
                return errors(StatusCode::BAD_REQUEST, "encryption key not found");
            };
            let mut plain = vec![0u8; bits as usize / 8];
            SystemRandom::new().fill(&mut plain).unwrap();
            let v = versions.len();
            let ct = seal(&versions[v - 1], v, &plain);
            let mut data = json!({ "ciphertext": ct, "key_version": v });
            if op == "datakey/plaintext" {
                data["plaintext"] = json!(b64().encode(&plain));
            }
            ok(data)
        }
        "encrypt" => {
            let Some(plain) = body["plaintext"]
                .as_str()
                .and_then(|p| b64().decode(p).ok())
            else {
                return errors(StatusCode::BAD_REQUEST, "missing plaintext to encrypt");
            };
            // Vault's upsert: encrypt creates a missing key.
            let versions = keys.entry(name).or_insert_with(|| vec![random()]);
            let v = versions.len();
            ok(json!({ "ciphertext": seal(&versions[v - 1], v, &plain), "key_version": v }))
        }
        "decrypt" => {
            let Some(versions) = keys.get(&name) else {
                return errors(StatusCode::BAD_REQUEST, "encryption key not found");
            };
            let ct = body["ciphertext"].as_str().unwrap_or_default();
            let Some((v, payload)) = ct
                .strip_prefix("vault:v")
                .and_then(|r| r.split_once(':'))
                .and_then(|(v, p)| Some((v.parse::<usize>().ok()?, p)))
            else {
                return errors(StatusCode::BAD_REQUEST, "invalid ciphertext: no prefix");
            };
            if v == 0 || v > versions.len() {
                return errors(StatusCode::BAD_REQUEST, "invalid key version");
            }
            let Some(raw) = b64().decode(payload).ok().filter(|r| r.len() >= 12 + 16) else {
                return errors(
                    StatusCode::BAD_REQUEST,
                    "invalid ciphertext: could not decode",
                );
            };
            let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &versions[v - 1]).unwrap());
            let nonce = Nonce::try_assume_unique_for_key(&raw[..12]).unwrap();
            let mut buf = raw[12..].to_vec();
            match k.open_in_place(nonce, Aad::empty(), &mut buf) {
                Ok(plain) => ok(json!({ "plaintext": b64().encode(plain) })),
                Err(_) => errors(
                    StatusCode::BAD_REQUEST,
                    "cipher: message authentication failed",
                ),
            }
        }
        _ => not_found(),
    }
}
