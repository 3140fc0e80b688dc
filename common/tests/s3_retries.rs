//! Retry and timeout behaviour of the `s3://` backend.
//!
//! Garage cannot be made to throttle, fail with a 5xx or hang on demand, so
//! these tests talk to a minimal scripted HTTP server on 127.0.0.1 that
//! answers each request as told. Everything Garage can do is tested against
//! Garage in `s3_backend.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trireme_common::backend::{S3Backend, S3Settings};
use trireme_common::location::S3Credentials;
use trireme_common::{Backend, Error, ObjectKey};

/// How the scripted server answers one request.
#[derive(Clone)]
enum Answer {
    /// An S3 error document with this status and code.
    Error(u16, &'static str),
    /// 200 with this body.
    Ok(&'static [u8]),
    /// Read the request and never answer.
    Hang,
}

/// Serve `script[i]` to the i-th request (the last entry repeats); returns
/// the endpoint and a request counter.
async fn scripted_server(script: Vec<Answer>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &script, &counter).await;
            });
        }
    });
    (endpoint, count)
}

async fn serve(
    mut stream: TcpStream,
    script: &[Answer],
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        // Read one request: headers, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut have = buf.len() - header_end;
        while have < body_len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        }
        let i = counter.fetch_add(1, Ordering::SeqCst);
        let answer = script[i.min(script.len() - 1)].clone();
        let response = match answer {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Answer::Ok(body) => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            }
            Answer::Error(status, code) => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                     <Message>scripted {code}</Message><RequestId>1</RequestId></Error>"
                );
                format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nContent-Type: application/xml\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
        };
        stream.write_all(&response).await?;
    }
}

fn settings(endpoint: &str, max_attempts: u32) -> S3Settings {
    let mut s = S3Settings::new("bucket", "p");
    s.endpoint = Some(endpoint.to_string());
    s.allow_http = true;
    s.path_style = true;
    s.region = "garage".into();
    s.max_attempts = max_attempts;
    s.credentials = Some(S3Credentials {
        access_key_id: "GKtest".into(),
        secret_access_key: "test-secret".into(),
        session_token: None,
    });
    s
}

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let (endpoint, count) = scripted_server(vec![
        Answer::Error(503, "SlowDown"),
        Answer::Error(429, "TooManyRequests"),
        Answer::Error(500, "InternalError"),
        Answer::Ok(b"hello"),
    ])
    .await;
    let backend = S3Backend::new(settings(&endpoint, 6)).await.unwrap();
    let got = backend.get(&ObjectKey::config()).await.unwrap();
    assert_eq!(got, Bytes::from_static(b"hello"));
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "three retries, then success"
    );
}

#[tokio::test]
async fn persistent_5xx_is_temporary_after_max_attempts() {
    for (status, code) in [
        (503, "SlowDown"),
        (500, "InternalError"),
        (429, "TooManyRequests"),
    ] {
        let (endpoint, count) = scripted_server(vec![Answer::Error(status, code)]).await;
        let backend = S3Backend::new(settings(&endpoint, 3)).await.unwrap();
        let data = Bytes::from_static(b"data");
        let sha: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data)
            .as_ref()
            .try_into()
            .unwrap();
        match backend.put(&ObjectKey::config(), data, sha).await {
            Err(Error::Storage {
                temporary, message, ..
            }) => {
                assert!(temporary, "{status} {code} is temporary: {message}");
                assert!(message.contains(&format!("HTTP {status}")), "{message}");
                assert!(message.contains(code), "{message}");
            }
            other => panic!("{status} {code}: {other:?}"),
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            3,
            "{status}: max_attempts = 3"
        );
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (endpoint, count) = scripted_server(vec![Answer::Error(403, "AccessDenied")]).await;
    let backend = S3Backend::new(settings(&endpoint, 6)).await.unwrap();
    match backend.head(&ObjectKey::config()).await {
        Err(e) => assert!(!e.is_temporary(), "{e}"),
        Ok(v) => panic!("403 on head: {v:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hung_server_times_out_as_temporary() {
    let (endpoint, count) = scripted_server(vec![Answer::Hang]).await;
    let mut s = settings(&endpoint, 2);
    s.attempt_timeout = Duration::from_secs(1);
    let backend = S3Backend::new(s).await.unwrap();
    let started = Instant::now();
    let err = backend.get(&ObjectKey::config()).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_temporary(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2, "two attempts");
}
