//! The HTTPS listener: accepting TLS connections under a cap, serving each with hyper
//! (HTTP/1.1 or HTTP/2 by ALPN), and the waits that keep a slow or silent peer from holding
//! a slot: handshake, first request, idle time, a slice nobody reads, drain on shutdown.
//!
//! Each connection has a [`Link`], which every request on it carries as an extension: the
//! [`Carrier`] that revoke cuts off (the connection is then dropped at once and reset, so
//! nothing it still buffers is sent), and the slices it is handing over, so that one the
//! client stops taking times the connection out.

use std::collections::BTreeSet;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::core::gate::Carrier;
use crate::core::marketer::Delivery;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a slice may wait for the connection to take its next part. The HTTP layer takes
/// a part only when it can send it, so a client that stops reading (or, on HTTP/2, opens no
/// flow-control window) stalls its slice; the connection is then reset.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP/2 streams a client may open at once on one connection. Slices per grant are
/// bounded by the grant's gate; this bounds the requests a single connection queues.
pub const MAX_STREAMS: u32 = 16;

/// Accepts and serves connections until `stop`, then lets in-flight ones finish (bounded).
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p?,
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors is transient: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(tcp, acceptor, app, stop).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow with the agent's uptime.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("in-flight connections did not finish in time; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

/// The HTTP version a connection speaks, as ALPN settled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

/// One connection, as the requests and slices on it see it: each request carries it as an
/// extension.
pub struct Link {
    carrier: Carrier,
    started: Instant,
    /// When the connection last finished a request (ms after `started`).
    last_ms: AtomicU64,
    /// Whether it has finished one: not `last_ms > 0`, since a first request can finish
    /// within the connection's first millisecond.
    answered: AtomicBool,
    /// Requests whose answer has not been produced yet.
    requests: AtomicUsize,
    /// Slice bodies alive on this connection.
    bodies: AtomicUsize,
    /// When a slice last made progress (ms after `started`): a part taken, or response bytes
    /// written.
    progress_ms: AtomicU64,
    /// Set when the connection is to be reset rather than closed.
    reset: AtomicBool,
    ledger: Mutex<Ledger>,
}

/// What the connection has written, as far as it tells when a slice is written out.
struct Ledger {
    version: Version,
    /// Slices whose last part hyper has taken, waiting to be written out, each with its mark:
    /// on HTTP/1.1 the order it was handed over in, on HTTP/2 the highest request stream when
    /// it was (see [`Ledger::written_out`]).
    waiting: Vec<(u64, Delivery)>,
    /// How many slices were handed over in full (HTTP/1.1 marks).
    handed: u64,
    /// Whether bytes were written since the stream was last flushed.
    dirty: bool,
    /// HTTP/2 framing, read and written.
    frames: Option<H2Frames>,
}

impl Ledger {
    /// Takes the slices now written out, given the HTTP/1.1 mark of a flush that completed.
    ///
    /// HTTP/1.1 sends one response after another and hyper calls the stream's flush only once
    /// its own buffer is empty: a slice handed over before a flush began is written out when
    /// that flush completes. HTTP/2 interleaves streams and keeps a stream's data until the
    /// client's window admits it, so the frames themselves are read: a slice handed over
    /// when the highest request stream was `n` is written out once every request stream up to
    /// `n` has ended (the agent sent its END_STREAM or a reset, or the client reset it) and
    /// nothing written since is left unflushed. Stream numbers only grow, so later requests
    /// never hold an earlier slice back.
    fn written_out(&mut self, flushed_h1: Option<u64>) -> Vec<Delivery> {
        let upto = match (&self.frames, flushed_h1) {
            (Some(frames), _) if !self.dirty => frames.ended_upto(),
            (None, Some(mark)) => mark,
            _ => return Vec::new(),
        };
        let (done, waiting) = std::mem::take(&mut self.waiting).into_iter().partition(|(mark, _)| *mark <= upto);
        self.waiting = waiting;
        done.into_iter().map(|(_, delivery)| delivery).collect()
    }
}

/// The HTTP/2 frames of a connection, as far as the ledger needs them.
struct H2Frames {
    read: FrameReader,
    written: FrameReader,
    /// Request streams the agent has not ended.
    open: BTreeSet<u32>,
    /// The highest request stream so far.
    highest: u32,
}

impl H2Frames {
    /// Every request stream up to this number has ended.
    fn ended_upto(&self) -> u64 {
        u64::from(self.open.first().map_or(self.highest, |first| first - 1))
    }
}

/// HTTP/2 frame types and flags (RFC 9113, section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;

/// A frame header: type, flags, stream.
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Finds frame headers in a stream of HTTP/2 bytes, whatever pieces they come in.
struct FrameReader {
    /// Bytes of the client's connection preface still to pass over.
    preface: usize,
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass over.
    payload: usize,
}

impl FrameReader {
    fn new(preface: usize) -> FrameReader {
        FrameReader { preface, head: [0; 9], have: 0, payload: 0 }
    }

    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            let skip = if self.preface > 0 { &mut self.preface } else { &mut self.payload };
            if *skip > 0 {
                let n = (*skip).min(bytes.len());
                *skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.head;
                self.have = 0;
                self.payload = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                frame(FrameHead { kind: h[3], flags: h[4], stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff });
            }
        }
    }
}

impl Link {
    fn new(version: Version) -> Link {
        let frames = (version == Version::Http2).then(|| H2Frames {
            // The client's preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
            read: FrameReader::new(24),
            written: FrameReader::new(0),
            open: BTreeSet::new(),
            highest: 0,
        });
        Link {
            carrier: Carrier::new(),
            started: Instant::now(),
            last_ms: 0.into(),
            answered: AtomicBool::new(false),
            requests: 0.into(),
            bodies: 0.into(),
            progress_ms: 0.into(),
            reset: AtomicBool::new(false),
            ledger: Mutex::new(Ledger { version, waiting: Vec::new(), handed: 0, dirty: false, frames }),
        }
    }

    /// The carrier of this connection's slices, which revoke cuts off.
    pub fn carrier(&self) -> &Carrier {
        &self.carrier
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Updates under the lock leave the ledger consistent at every step; a poisoned lock
        // still holds it.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A slice body starts on this connection; it counts until the returned guard is dropped.
    pub fn slice_body(self: &Arc<Self>) -> SliceBody {
        self.bodies.fetch_add(1, SeqCst);
        self.progressed();
        SliceBody(self.clone())
    }

    /// A slice made progress just now.
    pub fn progressed(&self) {
        self.progress_ms.store(self.now_ms(), SeqCst);
    }

    /// hyper has taken the last part of a slice: its delivery waits until the connection has
    /// written it out, and is dropped (its gate let go of, a cut-off recorded if the grant was
    /// revoked) if the connection ends first.
    pub fn handed_over(&self, delivery: Delivery) {
        let done = {
            let mut ledger = self.ledger();
            let mark = match &ledger.frames {
                Some(frames) => u64::from(frames.highest),
                None => {
                    ledger.handed += 1;
                    ledger.handed
                }
            };
            ledger.waiting.push((mark, delivery));
            ledger.written_out(None)
        };
        // Recording writes the audit: outside the lock.
        done.into_iter().for_each(Delivery::written);
    }

    /// Whether a slice is on its way: being handed over, or not yet written out.
    fn slices_on_their_way(&self) -> bool {
        self.bodies.load(SeqCst) > 0 || !self.ledger().waiting.is_empty()
    }

    /// How long slices on their way on this connection have made no progress.
    fn stalled_for(&self) -> Duration {
        if !self.slices_on_their_way() {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now_ms().saturating_sub(self.progress_ms.load(SeqCst)))
    }

    /// How long the connection has done nothing: `None` while a request is answered or a
    /// slice is on its way.
    fn idle_for(&self) -> Option<Duration> {
        if self.requests.load(SeqCst) > 0 || self.slices_on_their_way() {
            return None;
        }
        Some(Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(SeqCst))))
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), SeqCst);
        self.answered.store(true, SeqCst);
    }

    /// How long the connection may sit idle: until its first request, then between requests.
    fn idle_limit(&self) -> Duration {
        if self.answered.load(SeqCst) {
            IDLE_TIMEOUT
        } else {
            HEADER_TIMEOUT
        }
    }

    /// Bytes the client sent.
    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let done = {
            let mut ledger = self.ledger();
            let Some(frames) = ledger.frames.as_mut() else { return };
            let H2Frames { read, open, highest, .. } = frames;
            read.feed(bytes, |frame| match frame.kind {
                // A new request: stream numbers only grow, so a lower one is trailers.
                HEADERS if frame.stream > *highest => {
                    *highest = frame.stream;
                    open.insert(frame.stream);
                }
                RST_STREAM => {
                    open.remove(&frame.stream);
                }
                _ => {}
            });
            ledger.written_out(None)
        };
        done.into_iter().for_each(Delivery::written);
    }

    /// Bytes the agent wrote (not yet flushed).
    fn wrote(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut ledger = self.ledger();
        ledger.dirty = true;
        let mut data = false;
        match ledger.frames.as_mut() {
            Some(frames) => {
                let H2Frames { written, open, .. } = frames;
                written.feed(bytes, |frame| {
                    data |= frame.kind == DATA;
                    let ends = matches!(frame.kind, DATA | HEADERS) && frame.flags & END_STREAM != 0;
                    if ends || frame.kind == RST_STREAM {
                        open.remove(&frame.stream);
                    }
                });
            }
            // HTTP/1.1: every byte written is part of a response.
            None => data = true,
        }
        drop(ledger);
        if data {
            self.progressed();
        }
    }

    /// A flush that began when `mark` slices had been handed over (HTTP/1.1) completed.
    fn flushed(&self, mark: u64) {
        let done = {
            let mut ledger = self.ledger();
            ledger.dirty = false;
            let h1 = (ledger.version == Version::Http1).then_some(mark);
            ledger.written_out(h1)
        };
        done.into_iter().for_each(Delivery::written);
    }

    /// The connection is gone: slices not written out are dropped (see [`Delivery`]).
    fn gone(&self) {
        let waiting = std::mem::take(&mut self.ledger().waiting);
        drop(waiting);
    }
}

/// A slice body alive on a connection (see [`Link::slice_body`]).
pub struct SliceBody(Arc<Link>);

impl SliceBody {
    /// The connection this body is on.
    pub fn link(&self) -> &Link {
        &self.0
    }
}

impl Drop for SliceBody {
    fn drop(&mut self) {
        self.0.bodies.fetch_sub(1, SeqCst);
    }
}

/// Says the connection is closed when dropped, however [`connection`] returns.
struct Closing(Carrier);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// The connection's TLS stream, as hyper reads and writes it: it tells the [`Link`] what was
/// read, written and flushed, so that a slice's gate is let go of only once its bytes are
/// written out; and it is reset rather than closed when dropped after the connection was cut
/// off or timed out: with SO_LINGER 0 the OS discards what it has not sent yet (a close would
/// still send it) and the client gets a reset.
struct Severable {
    tls: TlsStream<TcpStream>,
    link: Arc<Link>,
}

impl Drop for Severable {
    fn drop(&mut self) {
        if self.link.reset.load(SeqCst) {
            if let Err(e) = self.tls.get_ref().0.set_zero_linger() {
                tracing::warn!(error = %e, "cannot reset a connection; closing it");
            }
        }
        self.link.gone();
    }
}

impl AsyncRead for Severable {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.tls).poll_read(cx, buf);
        this.link.read(&buf.filled()[before..]);
        result
    }
}

impl AsyncWrite for Severable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tls).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.link.wrote(&buf[..n]);
        }
        result
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tls).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            let mut left = n;
            for buf in bufs {
                let part = left.min(buf.len());
                this.link.wrote(&buf[..part]);
                left -= part;
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper's HTTP/1.1 flushes the stream only once its own buffer is written into it.
        let mark = this.link.ledger().handed;
        let result = Pin::new(&mut this.tls).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.link.flushed(mark);
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, app: axum::Router, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await.context("TLS handshake timed out")??;
    // A peer that completes the handshake and then says nothing is told goodbye with a TLS
    // close_notify (RFC 8446, section 6.1), so it can tell a deliberate close from a cut
    // line. Waiting here, before hyper owns the stream, is what lets us send it. Bytes that
    // arrived with the handshake are already decrypted inside rustls, where the socket's
    // readiness would not show them.
    let buffered = tls.get_mut().1.process_new_packets().map(|state| state.plaintext_bytes_to_read() > 0).unwrap_or(false);
    if !buffered && tokio::time::timeout(HEADER_TIMEOUT, tls.get_ref().0.readable()).await.is_err() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
        return Ok(());
    }
    // The version is settled by ALPN, and held to, so that the ledger reads the right framing.
    let version = if tls.get_ref().1.alpn_protocol() == Some(b"h2") { Version::Http2 } else { Version::Http1 };
    let link = Arc::new(Link::new(version));
    // Declared before the connection, so dropped after it: revoke hears the connection is
    // closed only once its stream is gone.
    let _closing = Closing(link.carrier.clone());
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut builder = match version {
        Version::Http1 => builder.http1_only(),
        Version::Http2 => builder.http2_only(),
    };
    // hyper starts its header timer as soon as it waits for the next request, so on a kept-
    // alive connection it is an idle timeout too: set to HEADER_TIMEOUT it closed connections
    // after 10 s idle, not the 30 s SPEC.md promises. The watchdog below holds a first request
    // to HEADER_TIMEOUT; hyper's timer is a second bound on a head that trickles in later.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_STREAMS).keep_alive_interval(Some(Duration::from_secs(30)));
    let tower = TowerToHyperService::new(app);
    let seen = link.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(seen.clone());
        seen.requests.fetch_add(1, SeqCst);
        let response = hyper::service::Service::call(&tower, request);
        let seen = seen.clone();
        async move {
            let result = response.await;
            seen.touch();
            seen.requests.fetch_sub(1, SeqCst);
            result
        }
    });
    let conn = builder.serve_connection(TokioIo::new(Severable { tls, link: link.clone() }), service);
    tokio::pin!(conn);
    // A peer that completes the handshake and then says nothing, or keeps an idle connection,
    // would hold one of the capped slots forever: hyper's own timeout covers only HTTP/1
    // request heads, not version sniffing or idle HTTP/2. So: a first request within
    // HEADER_TIMEOUT, and no more than IDLE_TIMEOUT between requests. A slice the client
    // stops taking holds its grant's gate, so it gets STALL_TIMEOUT, then the connection is
    // reset. A connection cut off by a revocation is reset at once.
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            result = conn.as_mut() => return result.map_err(|e| anyhow::anyhow!(e)),
            () = link.carrier.cut_off() => {
                tracing::debug!("connection cut off: a grant it carried was revoked");
                link.reset.store(true, SeqCst);
                return Ok(());
            }
            _ = stop.changed() => break,
            _ = watchdog.tick() => {
                if link.stalled_for() >= STALL_TIMEOUT {
                    tracing::debug!("a slice was not taken for {STALL_TIMEOUT:?}; resetting the connection");
                    link.reset.store(true, SeqCst);
                    return Ok(());
                }
                if link.idle_for().is_some_and(|idle| idle >= link.idle_limit()) {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    // A peer that ignores the goodbye does not hold the slot either, and a revocation still
    // cuts the connection off while it drains.
    tokio::select! {
        _ = tokio::time::timeout(DRAIN_TIMEOUT, conn) => {}
        () = link.carrier.cut_off() => link.reset.store(true, SeqCst),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_request_answered_within_a_millisecond_counts_as_answered() {
        for version in [Version::Http1, Version::Http2] {
            let link = Link::new(version);
            assert_eq!(link.idle_limit(), HEADER_TIMEOUT, "{version:?}: before any request");
            // At once, so `last_ms` is still 0: the connection has nonetheless been answered.
            link.touch();
            assert_eq!(link.idle_limit(), IDLE_TIMEOUT, "{version:?}: after the first request");
        }
    }

    /// A frame header: length, type, flags, stream.
    fn frame(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.resize(bytes.len() + len, 0xAB);
        bytes
    }

    #[test]
    fn finds_frame_headers_however_the_bytes_are_cut() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(6, 0x4, 0, 0));
        stream.extend(frame(20, HEADERS, 0x4 | END_STREAM, 1));
        stream.extend(frame(0x01_02_03, DATA, 0, 3));
        stream.extend(frame(4, RST_STREAM, 0, 0x8000_0005));
        let expected = [(0x4, 0, 0), (HEADERS, 0x5, 1), (DATA, 0, 3), (RST_STREAM, 0, 5)];
        for cut in [1, 2, 8, 9, 10, 24, 25, 4096, stream.len()] {
            let mut reader = FrameReader::new(24);
            let mut seen = Vec::new();
            for piece in stream.chunks(cut) {
                reader.feed(piece, |f| seen.push((f.kind, f.flags, f.stream)));
            }
            assert_eq!(seen, expected, "pieces of {cut} bytes");
        }
    }
}
