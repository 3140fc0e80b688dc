//! A small blocking Redis client (RESP2) over TCP or TLS: the handful of
//! commands a backup needs, plus `SYNC`, which hands over the RDB the way a
//! replica receives it. Client crates do not expose the replication stream,
//! and both paths share one connection type here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `:1`
    Int(i64),
    /// `$3 foo` (`None`: the null bulk string)
    Bulk(Option<Vec<u8>>),
    /// `*2 ...` (`None`: the null array)
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The value as text (simple or bulk strings).
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The value as an integer.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => self.text().and_then(|t| t.parse().ok()),
        }
    }

    /// The bulk strings of an array (others skipped).
    pub fn items(self) -> Vec<Vec<u8>> {
        match self {
            Value::Array(Some(v)) => v
                .into_iter()
                .filter_map(|x| match x {
                    Value::Bulk(Some(b)) => Some(b),
                    Value::Simple(s) => Some(s.into_bytes()),
                    Value::Int(i) => Some(i.to_string().into_bytes()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// CA certificate(s) that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Client certificate (PEM), for servers with `tls-auth-clients yes`.
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
    /// Name in the server's certificate (default: the host of the address).
    pub server_name: Option<String>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// `host:port`.
    pub address: String,
    /// ACL user (default: `default`).
    pub username: Option<String>,
    /// Password (from the source's password file).
    pub password: Option<String>,
    /// TLS, when the server speaks it.
    pub tls: Option<TlsSettings>,
    /// Connect timeout and default read timeout.
    pub timeout: Duration,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One connection.
pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
    tcp: TcpStream,
    address: String,
}

impl Conn {
    /// Connect and authenticate.
    ///
    /// # Errors
    /// Unreachable server, TLS failure, refused password: each says what to check.
    pub fn open(s: &ConnectSettings) -> Result<Conn> {
        let addr = s
            .address
            .to_socket_addrs()
            .with_context(|| format!("redis address {:?} does not resolve", s.address))?
            .next()
            .ok_or_else(|| anyhow!("redis address {:?} does not resolve", s.address))?;
        let tcp = TcpStream::connect_timeout(&addr, s.timeout).map_err(|e| {
            anyhow!(
                "cannot connect to redis at {}: {e} (is Redis running and is `address` right?)",
                s.address
            )
        })?;
        tcp.set_read_timeout(Some(s.timeout))?;
        tcp.set_write_timeout(Some(s.timeout))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &s.tls {
            None => Box::new(tcp.try_clone()?),
            Some(t) => Box::new(tls_stream(&s.address, t, tcp.try_clone()?)?),
        };
        let mut c = Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            tcp,
            address: s.address.clone(),
        };
        if let Some(pw) = &s.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &s.username {
                args.push(u.as_bytes());
            }
            args.push(pw.as_bytes());
            c.cmd(&args).map_err(|e| {
                anyhow!(
                    "redis at {} refused the credentials: {e:#} (check `username` and `password_file`)",
                    s.address
                )
            })?;
        }
        // A server that wants a password says so on the first command.
        c.cmd(&[b"PING"]).map_err(|e| {
            if e.to_string().contains("NOAUTH") {
                anyhow!(
                    "redis at {} needs a password: set `password_file` (and `username` for an ACL user)",
                    s.address
                )
            } else {
                anyhow!("redis at {}: PING failed: {e:#}", s.address)
            }
        })?;
        Ok(c)
    }

    /// Change the read timeout (e.g. while waiting for a long save).
    pub fn set_read_timeout(&self, t: Duration) -> Result<()> {
        Ok(self.tcp.set_read_timeout(Some(t))?)
    }

    /// Send a command and read its reply; a `-ERR` reply is an error with its text.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Result<Value> {
        let mut req = Vec::with_capacity(64);
        req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        let w = self.io.get_mut();
        w.write_all(&req)
            .and_then(|()| w.flush())
            .with_context(|| format!("redis at {}: sending a command", self.address))?;
        self.read_value()
    }

    /// A command of text arguments.
    pub fn cmd_str(&mut self, args: &[&str]) -> Result<Value> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a)
    }

    fn line(&mut self) -> Result<Vec<u8>> {
        let mut l = Vec::new();
        let n = self
            .io
            .read_until(b'\n', &mut l)
            .with_context(|| format!("redis at {}: reading a reply", self.address))?;
        if n == 0 {
            bail!("redis at {} closed the connection", self.address);
        }
        while matches!(l.last(), Some(b'\n' | b'\r')) {
            l.pop();
        }
        Ok(l)
    }

    fn read_value(&mut self) -> Result<Value> {
        let l = self.line()?;
        let (kind, rest) = l
            .split_first()
            .ok_or_else(|| anyhow!("redis at {}: empty reply line", self.address))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        let num = || -> Result<i64> {
            text.parse()
                .map_err(|_| anyhow!("redis: malformed reply {:?}", String::from_utf8_lossy(&l)))
        };
        Ok(match kind {
            b'+' => Value::Simple(text.clone()),
            b'-' => bail!("{text}"),
            b':' => Value::Int(num()?),
            b'$' => {
                let n = num()?;
                if n < 0 {
                    Value::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.io.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Value::Bulk(Some(b))
                }
            }
            b'*' => {
                let n = num()?;
                if n < 0 {
                    Value::Array(None)
                } else {
                    let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
                    for _ in 0..n {
                        v.push(self.read_value()?);
                    }
                    Value::Array(Some(v))
                }
            }
            _ => bail!(
                "redis at {}: unexpected reply {:?}",
                self.address,
                String::from_utf8_lossy(&l)
            ),
        })
    }

    /// Ask for the dataset the way a replica does (`SYNC`): the server saves
    /// an RDB and sends it. Returns the RDB's length and a reader of exactly
    /// that many bytes; the connection ends with the reader.
    pub fn sync(mut self, wait: Duration) -> Result<(u64, impl Read + Send)> {
        self.set_read_timeout(wait)?;
        let w = self.io.get_mut();
        w.write_all(b"SYNC\r\n")?;
        w.flush()?;
        // Newlines keep the link alive while the server saves.
        loop {
            let mut b = [0u8; 1];
            self.io.read_exact(&mut b).with_context(|| {
                format!(
                    "redis at {}: waiting for the RDB after SYNC (raise save_timeout for a large dataset)",
                    self.address
                )
            })?;
            match b[0] {
                b'\n' | b'\r' => continue,
                b'$' => break,
                b'-' => {
                    let e = self.line()?;
                    bail!(
                        "redis at {} refused SYNC: {} (the backup user needs the `sync` permission, or give `data_dir`)",
                        self.address,
                        String::from_utf8_lossy(&e)
                    );
                }
                other => bail!(
                    "redis at {}: unexpected byte {other:#x} before the RDB",
                    self.address
                ),
            }
        }
        let l = self.line()?;
        let text = String::from_utf8_lossy(&l);
        if text.starts_with("EOF:") {
            bail!(
                "redis at {} sent a diskless (EOF-delimited) RDB, which this agent does not read; give `data_dir` instead",
                self.address
            );
        }
        let n: u64 = text
            .parse()
            .map_err(|_| anyhow!("redis at {}: malformed RDB length {text:?}", self.address))?;
        Ok((n, self.io.take(n)))
    }
}

fn tls_stream(
    address: &str,
    t: &TlsSettings,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use trireme_net::tls::config::{load_certs, load_key, provider};
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&t.ca)? {
        roots
            .add(c)
            .with_context(|| format!("redis tls.ca {}", t.ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => builder.with_client_auth_cert(load_certs(c)?, load_key(k)?)?,
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("redis tls: give both `cert` and `key`, or neither"),
    };
    let host = t.server_name.clone().unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string()
    });
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| anyhow!("redis tls: {host:?} is not a valid server name"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
