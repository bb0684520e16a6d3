//! Revocation holds whatever the client does with its transport: a client that opens no
//! HTTP/2 flow-control window, or stops reading an HTTP/1.1 response, gets nothing more of a
//! slice once `optin revoke` has returned; and no client makes the agent hold more than a
//! bound of one grant's slices, or hold a slice nobody reads for long.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use optin_examples::Protocol;
use optin_protocol::bundle::GrantBundle;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use optin_tests::{fixture, now, Agent};

/// Most slices of one grant the agent holds at once (SPEC.md, Revocation).
const MAX_IN_FLIGHT: usize = 16;
/// Most HTTP/2 streams the agent lets one connection open at once.
const MAX_STREAMS: usize = 16;
/// What the audit records of a slice cut off by a revocation.
const CUT_OFF: &str = "grant revoked while the slice was in flight";

/// Searches with long queries, enough for one page of a slice (`limit=1000`) to be about a
/// megabyte: far more than a small receive buffer, TLS records and the HTTP layer's buffers.
fn many_long_searches() -> String {
    let at = now();
    let signals: Vec<Value> = (0..1000)
        .map(|i| {
            let query = format!("{i:04} {}", "trail running shoes wide fit waterproof ".repeat(12));
            fixture::search(&format!("long-{i}"), fixture::ago(at, 1 + i / 100), query.trim(), "duckduckgo.com", "Apparel & Accessories > Shoes")
        })
        .collect();
    fixture::ndjson(&signals)
}

/// The audit's events of `grant`, in order.
async fn events_of(agent: &Agent, grant: &str) -> Vec<Value> {
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let records = audit["records"].as_array().expect("an array");
    records.iter().map(|r| r["event"].clone()).filter(|e| e["grant_id"] == grant).collect()
}

/// Checks what the audit says of the one slice of `grant` that was in flight at its
/// revocation: its `served` record, written when it was signed, is before the revocation and
/// none is after; and unless it was written out before the revocation, a `refused` record
/// names it as cut off (waited for, bounded: the connection's end records it).
async fn assert_cut_off_or_served_before(agent: &Agent, grant: &str) {
    let mut waited = Duration::ZERO;
    loop {
        let events = events_of(agent, grant).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
        let revoked = types.iter().position(|t| *t == "revoked").expect("the revocation is recorded");
        let served_after = types[revoked..].iter().filter(|t| **t == "served").count();
        assert_eq!(served_after, 0, "a slice is recorded as served after the revocation: {events:#?}");
        let served: Vec<&Value> = events[..revoked].iter().filter(|e| e["type"] == "served").collect();
        assert_eq!(served.len(), 1, "the slice in flight is on record once, from its signing: {events:#?}");
        let cut_off: Vec<&Value> = events.iter().filter(|e| e["type"] == "refused" && e["reason"] == CUT_OFF).collect();
        assert!(cut_off.iter().all(|e| e["slice_id"] == served[0]["slice_id"]), "a cut-off names the slice: {events:#?}");
        // Written out before the revocation, it has nothing more to record.
        if cut_off.len() == 1 || waited >= Duration::from_secs(3) {
            assert!(cut_off.len() <= 1, "cut off once: {events:#?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

/// An HTTP/1.1 TLS connection to the agent over a socket whose receive buffer is as small as
/// the OS allows, so that what the client does not read stays on the agent's side.
async fn connect_with_a_small_receive_buffer(agent: &Agent) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let tcp = socket.connect(agent.addr()).await.expect("connect");
    let config = optin_examples::pinned_tls_config(&agent.fingerprint, Protocol::Http1).expect("the agent's pin");
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("a TLS handshake")
}

/// Reads until the end of an HTTP/1.1 response head; returns the status, the
/// `Content-Length` and the body bytes read with the head.
async fn read_head(tls: &mut (impl AsyncRead + Unpin)) -> (u16, usize, Vec<u8>) {
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf)).await.expect("a response head in time").expect("read");
        assert!(n > 0, "the connection ended before the response head");
        read.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&read[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a status line: {head}"));
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Content-Length: {head}"));
    (status, length, read[end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cuts_off_an_http1_response_the_client_stopped_reading() {
    let agent = Agent::start().await;
    agent.ingest(&many_long_searches()).await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let mut tls = connect_with_a_small_receive_buffer(&agent).await;
    let request = format!("GET /v1/slice?limit=1000 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n", agent.addr(), bundle.token);
    tls.write_all(request.as_bytes()).await.expect("send the request");
    // The head says the slice is on its way; then the client stops reading.
    let (status, length, mut body) = read_head(&mut tls).await;
    assert_eq!(status, 200);
    assert!(length > 500_000, "the slice should dwarf the socket buffers: {length} bytes");

    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    // Now the client reads all it can. It gets what already reached its own small buffer,
    // then the reset: never the whole slice.
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf)).await.expect("the connection ends or the slice arrives") {
            Ok(0) => break "the end of the stream".to_owned(),
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => break e.to_string(),
        }
        if body.len() >= length {
            break "the whole slice".to_owned();
        }
    };
    assert!(body.len() < length, "{} of {length} bytes arrived after revoke returned ({ended})", body.len());
    assert!(bundle.verify_slice(&String::from_utf8_lossy(&body)).is_err());
    assert_cut_off_or_served_before(&agent, bundle.grant_id.as_str()).await;
}

/// An HTTP/2 connection to the agent that opens no flow-control window for its streams
/// until told to: the agent may send response heads, but no byte of a body.
struct ZeroWindow {
    client: h2::client::SendRequest<Bytes>,
    open: Option<oneshot::Sender<()>>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

impl ZeroWindow {
    async fn connect(agent: &Agent) -> ZeroWindow {
        let tls = agent.client_over(Protocol::Http2).connect().await.expect("a TLS connection");
        let (client, mut connection) = h2::client::Builder::new().initial_window_size(0).handshake(tls).await.expect("an HTTP/2 handshake");
        let (open, opened) = oneshot::channel::<()>();
        let driver = tokio::spawn(async move {
            tokio::select! {
                done = &mut connection => return done,
                _ = opened => {}
            }
            // A new initial window applies to the streams already open (RFC 9113, 6.9.2).
            connection.set_initial_window_size(4 << 20)?;
            connection.set_target_window_size(4 << 20);
            connection.await
        });
        ZeroWindow { client, open: Some(open), driver }
    }

    /// Sends `GET /v1/slice` with `token` on a new stream.
    async fn send_slice_request(&mut self, agent: &Agent, token: &str) -> h2::client::ResponseFuture {
        let request =
            Request::get(format!("https://{}/v1/slice", agent.addr())).header("authorization", format!("Bearer {token}")).body(()).expect("a request");
        let mut client = self.client.clone().ready().await.expect("room for a stream");
        client.send_request(request, true).expect("a stream").0
    }

    /// Sends `GET /v1/slice` with `token` and waits for the response head.
    async fn get_slice(&mut self, agent: &Agent, token: &str) -> hyper::Response<h2::RecvStream> {
        let response = self.send_slice_request(agent, token).await;
        tokio::time::timeout(Duration::from_secs(15), response).await.expect("a response head in time").expect("a response head")
    }

    /// Opens the windows of every stream.
    fn open(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.send(());
        }
    }
}

/// Reads a body to its end; returns what arrived and whether the stream ended cleanly.
async fn read_body(body: &mut h2::RecvStream) -> (Vec<u8>, Result<(), h2::Error>) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(data) = body.data().await {
            let data = data?;
            let _ = body.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        Ok(())
    });
    let result = read.await.expect("the stream ends in time");
    (got, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cuts_off_an_http2_stream_with_no_window() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle: GrantBundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let mut connection = ZeroWindow::connect(&agent).await;
    let response = connection.get_slice(&agent, &bundle.token).await;
    assert_eq!(response.status(), StatusCode::OK, "the head arrives; the body waits for a window");

    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    // Only now does the client open its window.
    connection.open();
    let (got, ended) = read_body(&mut response.into_body()).await;
    assert!(got.is_empty() && ended.is_err(), "{} bytes arrived after revoke returned, then {ended:?}", got.len());
    let driver = tokio::time::timeout(Duration::from_secs(15), connection.driver).await.expect("the connection ends").expect("the driver");
    assert!(driver.is_err(), "the agent resets the connection: {driver:?}");
    assert_cut_off_or_served_before(&agent, bundle.grant_id.as_str()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_has_a_bound_of_slices_in_flight_and_unread_ones_time_out() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    // Four connections, each with as many streams as it may open, none with a window: every
    // slice the agent agrees to send stays in flight. All the requests go out at once.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(ZeroWindow::connect(&agent).await);
    }
    let mut pending = Vec::new();
    for (n, connection) in connections.iter_mut().enumerate() {
        for _ in 0..MAX_STREAMS {
            pending.push((n, connection.send_slice_request(&agent, &bundle.token).await));
        }
    }
    let mut statuses = Vec::new();
    let mut holding = [false; 4];
    // Kept, unread: dropping one would reset its stream, which frees its slice.
    let mut responses = Vec::new();
    for (n, response) in pending {
        let response = tokio::time::timeout(Duration::from_secs(15), response).await.expect("a response head in time").expect("a response head");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            assert!(retry_after.is_some_and(|s| s > 0), "429 says when to try again: {:?}", response.headers());
        }
        statuses.push(response.status().as_u16());
        holding[n] |= response.status() == StatusCode::OK;
        responses.push(response);
    }
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((served, refused), (MAX_IN_FLIGHT, statuses.len() - MAX_IN_FLIGHT), "{statuses:?}\nagent log:\n{}", agent.log());

    // Any client is told the same while they are held, as a problem.
    let response = agent.client().get("/v1/slice", Some(&bundle.token)).await.expect("an answer");
    assert_eq!(response.status.as_u16(), 429, "{}", response.text());
    let problem = response.problem().unwrap_or_else(|| panic!("not a problem: {}", response.text()));
    assert_eq!(problem.type_, "urn:optin:problem:too-many-requests");
    assert!(response.header("retry-after").is_some());

    // Nobody reads them: the agent resets the connections that hold slices, and the grant
    // serves again. (The others hold only refusals, which count against no grant.)
    for (connection, holding) in connections.into_iter().zip(holding) {
        if !holding {
            connection.driver.abort();
            continue;
        }
        let driver = tokio::time::timeout(Duration::from_secs(60), connection.driver).await.expect("the agent times out unread slices").expect("the driver");
        assert!(driver.is_err(), "the agent resets a connection whose slices are not read: {driver:?}");
    }
    drop(responses);
    let mut waited = Duration::ZERO;
    loop {
        let response = agent.client().get("/v1/slice", Some(&bundle.token)).await.expect("an answer");
        if response.status.as_u16() == 200 {
            bundle.verify_slice(&response.text()).expect("a slice");
            break;
        }
        assert!(response.status.as_u16() == 429 && waited < Duration::from_secs(15), "{} {}", response.status, response.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}
