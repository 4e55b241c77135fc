//! Opening an upstream connection: TCP (no Nagle delay, keep-alive probes), TLS for https
//! (rustls with the Mozilla root store, as the reqwest setup before had), then hyper's HTTP/1.1
//! handshake. The connection's task is spawned on this thread's runtime, a current-thread one
//! in every actix worker, so it runs on the thread of the calls that use it.

use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Sender;
use crate::config::providers::UpstreamUrl;
use crate::failure::{FailureKind, UpstreamFailure};

/// The longest wait for TCP and TLS to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The TLS setup, built once per process.
pub fn tls_connector() -> Result<TlsConnector, rustls::Error> {
    static CONNECTOR: OnceLock<Result<TlsConnector, rustls::Error>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            tls_connector_with(roots)
        })
        .clone()
}

fn tls_connector_with(roots: rustls::RootCertStore) -> Result<TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // This client speaks HTTP/1.1 only (LiteLLM's httpx does too, by default).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A new connection to `url`'s origin, ready for a request.
pub async fn open(url: &UpstreamUrl) -> Result<Sender, UpstreamFailure> {
    let tls = match url.tls {
        true => Some(tls_connector().map_err(|e| cannot_connect(url, &e))?),
        false => None,
    };
    open_with(url, tls.as_ref()).await
}

async fn open_with(url: &UpstreamUrl, tls: Option<&TlsConnector>) -> Result<Sender, UpstreamFailure> {
    match tokio::time::timeout(CONNECT_TIMEOUT, establish(url, tls)).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamFailure::new(
            FailureKind::Timeout,
            format!("cannot connect to {} within {}s", url.origin, CONNECT_TIMEOUT.as_secs()),
        )),
    }
}

async fn establish(url: &UpstreamUrl, tls: Option<&TlsConnector>) -> Result<Sender, UpstreamFailure> {
    let tcp = TcpStream::connect((&*url.host, url.port)).await.map_err(|e| cannot_connect(url, &e))?;
    // Both are tuning: a socket without them still works.
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
    let handshake = match tls {
        Some(tls) => {
            let name =
                rustls::pki_types::ServerName::try_from(url.host.to_string()).map_err(|e| cannot_connect(url, &e))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| cannot_connect(url, &e))?;
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        }
        None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
    };
    handshake.map_err(|e| cannot_connect(url, &e))
}

async fn handshake<T>(io: T) -> hyper::Result<Sender>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

fn cannot_connect(url: &UpstreamUrl, e: &dyn Display) -> UpstreamFailure {
    UpstreamFailure::new(FailureKind::Connection, format!("cannot connect to {}: {e}", url.origin))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const CA: &[u8] = include_bytes!("../../../tests/fixtures/tls/ca.pem");
    const CERT: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.pem");
    const KEY: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.key");

    /// A TLS server that answers one request on each connection with `ok`, having read its head
    /// and a body of `Content-Length` bytes.
    async fn tls_server() -> u16 {
        let certs = vec![CertificateDer::from_pem_slice(CERT).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut stream = acceptor.accept(tcp).await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                stream.flush().await.unwrap();
            }
        });
        port
    }

    #[tokio::test]
    async fn speaks_https_to_a_server_whose_certificate_is_trusted() {
        let port = tls_server().await;
        let url = UpstreamUrl::new(&format!("https://localhost:{port}/v1/chat/completions")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(CA).unwrap()).unwrap();
        let tls = tls_connector_with(roots).unwrap();
        let mut sender = open_with(&url, Some(&tls)).await.unwrap();
        sender.ready().await.unwrap();
        let request = http::Request::post(url.target.clone())
            .header(http::header::HOST, url.authority.clone())
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");

        // The public roots do not trust the test CA: a connection failure, not a timeout.
        let failure = open(&url).await.err().unwrap();
        assert_eq!(failure.kind, FailureKind::Connection);
        assert!(failure.message.contains("certificate"), "{}", failure.message);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = UpstreamUrl::new(&format!("http://127.0.0.1:{port}/v1")).unwrap();
        let failure = open(&url).await.err().unwrap();
        assert_eq!(failure.kind, FailureKind::Connection);
        assert!(
            failure.message.starts_with(&format!("cannot connect to http://127.0.0.1:{port}")),
            "{}",
            failure.message
        );
    }
}
