//! The client against scripted backends on 127.0.0.1: each backend reads
//! exactly what the client sent and answers with exact bytes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

/// The bound on every wait in these tests.
const BOUND: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(200);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("took too long")
}

// ---- the scripted backend -------------------------------------------------

struct Backend {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Backend {
    async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Backend { listener, addr }
    }

    /// A backend whose connections have a small send buffer, so a client
    /// that stops reading blocks it soon.
    fn with_small_send_buffer() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(32 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        Backend { listener, addr }
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = within(self.listener.accept()).await.unwrap();
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    fn pool(&self, timeouts: Timeouts) -> Pool {
        Pool::new(
            self.addr,
            PoolConfig {
                max_idle: 8,
                connect_timeout: Duration::from_secs(2),
                timeouts,
            },
        )
    }
}

/// The backend's side of one connection.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// Reads more; 0 at EOF.
    async fn fill(&mut self) -> usize {
        let mut chunk = vec![0; 64 * 1024];
        let n = within(self.stream.read(&mut chunk)).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads exactly `want`.
    async fn expect(&mut self, want: &[u8]) {
        while self.buf.len() < want.len() {
            if self.fill().await == 0 {
                break;
            }
        }
        let n = want.len().min(self.buf.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    /// Reads a request head.
    async fn head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..i + 4).collect();
                return String::from_utf8(head).unwrap();
            }
            assert!(self.fill().await > 0, "EOF before a request head");
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// Waits for the client to close the connection.
    async fn expect_eof(&mut self) {
        while self.fill().await > 0 {}
        self.buf.clear();
    }
}

// ---- client helpers -------------------------------------------------------

fn timeouts(backend: Duration, client: Duration) -> Timeouts {
    Timeouts {
        backend_idle: backend,
        client_idle: client,
    }
}

fn host() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("b"));
    h
}

async fn send<B>(conn: Connection, method: Method, target: &str, framing: Framing, body: B) -> Result<Answer, SendError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let headers = host();
    let head = RequestHead {
        method: &method,
        target,
        headers: &headers,
        framing,
    };
    within(conn.send(&head, body, None)).await
}

async fn get(conn: Connection, target: &str) -> Result<Answer, SendError> {
    send(conn, Method::GET, target, Framing::None, Empty::<Bytes>::new()).await
}

fn response(answer: Answer) -> http::Response<ResponseBody> {
    match answer {
        Answer::Response(r, _) => r,
        Answer::Upgraded(u) => panic!("unexpected upgrade: {:?}", u.head),
    }
}

async fn read_all(body: ResponseBody) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
    let collected = within(body.collect()).await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// A request body fed through a channel.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx)
    }
}

fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, io::Error>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx))
}

/// The proxy spawns exchanges and hands bodies to hyper: all must be `Send`.
#[allow(dead_code)]
fn exchanges_are_send(conn: Connection, head: RequestHead<'_>, body: &mut hyper::body::Incoming) {
    fn send<T: Send>(_: &T) {}
    fn error<T: Into<BoxError>>() {}
    send(&conn.send(&head, body, None));
    error::<BodyError>();
    error::<SendError>();
    error::<ConnectError>();
    error::<QueueError>();
}

// ---- responses ------------------------------------------------------------

#[tokio::test]
async fn purges_close_connections_idle_for_that_many_calls_oldest_first() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut older = backend.accept().await;
        let mut newer = backend.accept().await;
        for peer in [&mut older, &mut newer] {
            peer.head().await;
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
        (older, newer)
    };
    let client = async {
        let a = pool.checkout().await.unwrap();
        let b = pool.checkout().await.unwrap();
        let (a, b) = tokio::join!(get(a, "/"), get(b, "/"));
        read_all(response(a.unwrap()).into_body()).await.unwrap();
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.purge_idle(2), 0, "idle for less than two purges");
        read_all(response(b.unwrap()).into_body()).await.unwrap();
        assert_eq!(pool.idle(), 2);
        assert_eq!(pool.purge_idle(2), 1, "the first one returned goes first");
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.purge_idle(2), 1);
        assert_eq!(pool.idle(), 0);
    };
    let ((mut older, mut newer), ()) = tokio::join!(script, client);
    older.expect_eof().await;
    newer.expect_eof().await;
}

#[tokio::test]
async fn get_with_content_length_then_the_same_connection_again() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        // One connection only: a second connect would never be answered.
        let mut peer = backend.accept().await;
        peer.expect(b"GET /a?x=1 HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello")
            .await;
        peer.expect(b"GET /b HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye").await;
        peer
    };
    let client = async {
        let conn = pool.checkout().await.unwrap();
        assert!(!conn.is_reused());
        let first = conn.local_addr().unwrap();
        let r = response(get(conn, "/a?x=1").await.unwrap());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-y"], "z");
        assert_eq!(r.body().size_hint().exact(), Some(5));
        let (body, trailers) = read_all(r.into_body()).await.unwrap();
        assert_eq!(body, "hello");
        assert!(trailers.is_none());
        assert_eq!(pool.idle(), 1);
        let conn = pool.checkout().await.unwrap();
        assert!(conn.is_reused());
        assert_eq!(conn.local_addr().unwrap(), first);
        let r = response(get(conn, "/b").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "bye");
        assert_eq!(pool.idle(), 1);
    };
    let (_peer, ()) = tokio::join!(script, client);
}

#[tokio::test]
async fn chunked_response_with_extensions_and_trailers() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n")
            .await;
        peer.send(b"6 ; x\r\n world\r\n0\r\nX-Sum: 11\r\nX-Other: a\r\n\r\n")
            .await;
        peer
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(r.headers()["transfer-encoding"], "chunked");
        let (body, trailers) = read_all(r.into_body()).await.unwrap();
        assert_eq!(body, "hello world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "11");
        assert_eq!(trailers["x-other"], "a");
        assert_eq!(pool.idle(), 1, "a complete chunked body leaves the connection reusable");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn close_delimited_response_is_read_to_eof_and_not_reused() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\n\r\nall of it, ").await;
        peer.send(b"until the end").await;
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert!(!r.body().reusable());
        let (body, _) = read_all(r.into_body()).await.unwrap();
        assert_eq!(body, "all of it, until the end");
        assert_eq!(pool.idle(), 0);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn head_request_with_content_length_has_no_body() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.expect(b"HEAD /f HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
        peer.expect(b"GET /g HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        peer
    };
    let client = async {
        let conn = pool.checkout().await.unwrap();
        let r = response(
            send(conn, Method::HEAD, "/f", Framing::None, Empty::<Bytes>::new())
                .await
                .unwrap(),
        );
        assert_eq!(r.headers()["content-length"], "100");
        assert!(r.body().is_end_stream());
        assert_eq!(pool.idle(), 1, "returned as soon as the head was read");
        assert!(read_all(r.into_body()).await.unwrap().0.is_empty());
        let r = response(get(pool.checkout().await.unwrap(), "/g").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "ok");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn no_body_for_204_and_304() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        peer.head().await;
        peer.send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
            .await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext").await;
        peer
    };
    let client = async {
        for status in [204, 304] {
            let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
            assert_eq!(r.status(), status);
            assert!(read_all(r.into_body()).await.unwrap().0.is_empty());
        }
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "next");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_dechunked_stripped_and_not_reused() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .await;
        peer.expect_eof().await;
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert!(r.headers().get("content-length").is_none());
        assert!(!r.body().reusable());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hello");
        assert_eq!(pool.idle(), 0);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn gzip_chunked_keeps_its_transfer_encoding_field_and_is_dechunked() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n")
            .await;
        peer
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(r.headers()["transfer-encoding"], "gzip, chunked");
        assert_eq!(read_all(r.into_body()).await.unwrap().0, &b"\x1f\x8b\x08\x00"[..]);
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn interim_responses_100_swallowed_103_relayed() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
            .await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        peer
    };
    let client = async {
        let mut seen = Vec::new();
        let mut on_interim = |r: http::Response<()>| seen.push((r.status(), r.headers().clone()));
        let headers = host();
        let head = RequestHead {
            method: &Method::GET,
            target: "/",
            headers: &headers,
            framing: Framing::None,
        };
        let conn = pool.checkout().await.unwrap();
        let r = response(
            within(conn.send(&head, Empty::<Bytes>::new(), Some(&mut on_interim)))
                .await
                .unwrap(),
        );
        assert_eq!(r.status(), 200);
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "ok");
        assert_eq!(seen.len(), 1, "100 is swallowed");
        assert_eq!(seen[0].0, StatusCode::EARLY_HINTS);
        assert_eq!(seen[0].1["link"], "</s.css>; rel=preload");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn switching_protocols_hands_over_the_stream_and_leftover_bytes() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nEARLY")
            .await;
        peer.expect(b"ping").await;
        peer.send(b"pong").await;
    };
    let client = async {
        let answer = get(pool.checkout().await.unwrap(), "/ws").await.unwrap();
        let Answer::Upgraded(mut up) = answer else {
            panic!("expected an upgrade");
        };
        assert_eq!(up.head.status(), 101);
        assert_eq!(up.head.headers()["upgrade"], "x");
        let mut seen = up.leftover.to_vec();
        up.stream.write_all(b"ping").await.unwrap();
        while seen.len() < b"EARLYpong".len() {
            let mut b = [0; 16];
            let n = within(up.stream.read(&mut b)).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&b[..n]);
        }
        assert_eq!(seen, b"EARLYpong");
        assert_eq!(pool.idle(), 0);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn http_1_0_answers_are_reused_only_with_keep_alive() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut plain = backend.accept().await;
        plain.head().await;
        plain.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi").await;
        plain.expect_eof().await;
        let mut kept = backend.accept().await;
        kept.head().await;
        kept.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi")
            .await;
        kept.head().await;
        kept.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            .await;
        kept.expect_eof().await;
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(r.version(), http::Version::HTTP_10);
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hi");
        assert_eq!(pool.idle(), 0);
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hi");
        assert_eq!(pool.idle(), 1);
        let conn = pool.checkout().await.unwrap();
        assert!(conn.is_reused());
        let r = response(get(conn, "/").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hi");
        assert_eq!(pool.idle(), 0, "Connection: close");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn bytes_past_the_response_make_the_connection_unusable() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA").await;
        peer.expect_eof().await;
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hi");
        assert_eq!(pool.idle(), 0);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn bytes_that_arrive_while_idle_make_the_connection_unusable() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let (idle_tx, idle_rx) = tokio::sync::oneshot::channel::<()>();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").await;
        idle_rx.await.unwrap();
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale").await;
        sent_tx.send(()).unwrap();
        let mut second = backend.accept().await;
        second.head().await;
        second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh").await;
        (peer, second)
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "hi");
        assert_eq!(pool.idle(), 1);
        idle_tx.send(()).unwrap();
        sent_rx.await.unwrap();
        tokio::task::yield_now().await;
        let conn = pool.checkout().await.unwrap();
        assert!(!conn.is_reused(), "a connection that spoke while idle is dropped");
        let r = response(get(conn, "/").await.unwrap());
        assert_eq!(
            read_all(r.into_body()).await.unwrap().0,
            "fresh",
            "never the unasked answer"
        );
    };
    let ((mut peer, _second), ()) = tokio::join!(script, client);
    peer.expect_eof().await;
}

// ---- request bodies -------------------------------------------------------

#[tokio::test]
async fn request_body_with_content_length() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.expect(b"POST /up HTTP/1.1\r\nhost: b\r\ncontent-length: 5\r\n\r\nhello")
            .await;
        peer.send(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await;
        peer
    };
    let client = async {
        let conn = pool.checkout().await.unwrap();
        let body = Full::new(Bytes::from_static(b"hello"));
        let r = response(send(conn, Method::POST, "/up", Framing::Length(5), body).await.unwrap());
        assert_eq!(r.status(), 201);
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn chunked_request_body_with_trailers() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.expect(
            b"POST /up HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
        )
        .await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer
    };
    let client = async {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("11"));
        let frames: Vec<Result<_, io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from_static(b" world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let conn = pool.checkout().await.unwrap();
        let r = response(send(conn, Method::POST, "/up", Framing::Chunked, body).await.unwrap());
        assert_eq!(r.status(), 200);
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn slow_but_steady_upload_and_download_outlast_the_idle_timeouts() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, SHORT));
    let gap = SHORT / 3;
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.expect(b"0123456789").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").await;
        for b in b"abcdefghij" {
            tokio::time::sleep(gap).await;
            peer.send(&[*b]).await;
        }
        peer
    };
    let client = async {
        let (tx, body) = channel_body();
        let feeder = tokio::spawn(async move {
            for b in b"0123456789" {
                tokio::time::sleep(gap).await;
                tx.send(Ok(Frame::data(Bytes::copy_from_slice(&[*b])))).await.unwrap();
            }
        });
        let started = Instant::now();
        let conn = pool.checkout().await.unwrap();
        let r = response(
            send(conn, Method::PUT, "/slow", Framing::Length(10), body)
                .await
                .unwrap(),
        );
        assert!(
            started.elapsed() > SHORT * 2,
            "the upload took longer than both idle timeouts"
        );
        let started = Instant::now();
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "abcdefghij");
        assert!(started.elapsed() > SHORT * 2, "so did the download");
        feeder.await.unwrap();
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_slow_client_is_not_blamed_on_the_backend() {
    // The client pauses longer than backend_idle between frames: the
    // backend owes nothing meanwhile, so only client_idle applies.
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, SHORT * 5));
    let script = async {
        let mut peer = backend.accept().await;
        peer.expect(b"PUT /slow HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        peer.expect(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer
    };
    let client = async {
        let (tx, body) = channel_body();
        let feeder = tokio::spawn(async move {
            for b in b"abc" {
                tokio::time::sleep(SHORT * 3 / 2).await;
                tx.send(Ok(Frame::data(Bytes::copy_from_slice(&[*b])))).await.unwrap();
            }
        });
        let conn = pool.checkout().await.unwrap();
        let r = response(send(conn, Method::PUT, "/slow", Framing::Chunked, body).await.unwrap());
        assert_eq!(r.status(), 200);
        feeder.await.unwrap();
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn an_empty_post_says_content_length_0_and_framing_none_sends_no_body() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.expect(b"POST /e HTTP/1.1\r\nhost: b\r\ncontent-length: 0\r\n\r\n")
            .await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer.expect(b"GET /n HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer.expect(b"GET /last HTTP/1.1\r\nhost: b\r\n\r\n").await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer
    };
    let client = async {
        let conn = pool.checkout().await.unwrap();
        response(
            send(conn, Method::POST, "/e", Framing::Length(0), Empty::<Bytes>::new())
                .await
                .unwrap(),
        );
        let conn = pool.checkout().await.unwrap();
        let ignored = Full::new(Bytes::from_static(b"not sent"));
        response(send(conn, Method::GET, "/n", Framing::None, ignored).await.unwrap());
        // Had "not sent" gone out, the backend would read it as the next head.
        response(get(pool.checkout().await.unwrap(), "/last").await.unwrap());
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

/// A body of `frames` frames of 64 KiB, counting the frames taken.
fn big_body(frames: usize, taken: Arc<AtomicUsize>) -> impl Body<Data = Bytes, Error = io::Error> {
    use futures_util::StreamExt;
    let frame = Bytes::from(vec![b'x'; 64 * 1024]);
    let frames = futures_util::stream::repeat_with(move || {
        taken.fetch_add(1, Ordering::Relaxed);
        Ok(Frame::data(frame.clone()))
    })
    .take(frames);
    StreamBody::new(frames)
}

#[tokio::test]
async fn early_413_stops_the_upload_without_deadlock_and_is_not_reused() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(Duration::from_secs(5), Duration::from_secs(5)));
    let frames = 1024; // 64 MiB: far more than socket buffers hold
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        // Answer at once and never read the body.
        peer.send(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig!")
            .await;
        let _ = answered_rx.await;
        peer
    };
    let client = async {
        let taken = Arc::new(AtomicUsize::new(0));
        let body = big_body(frames, Arc::clone(&taken));
        let conn = pool.checkout().await.unwrap();
        let r = response(
            send(
                conn,
                Method::POST,
                "/up",
                Framing::Length(frames as u64 * 64 * 1024),
                body,
            )
            .await
            .unwrap(),
        );
        assert_eq!(r.status(), 413);
        assert!(!r.body().reusable());
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "big!");
        assert!(taken.load(Ordering::Relaxed) < frames, "the upload stopped");
        assert_eq!(pool.idle(), 0);
        answered_tx.send(()).unwrap();
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_backend_that_stops_reading_and_never_answers_times_out() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, Duration::from_secs(5)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        let _ = done_rx.await;
    };
    let client = async {
        let taken = Arc::new(AtomicUsize::new(0));
        let body = big_body(1024, taken);
        let conn = pool.checkout().await.unwrap();
        let started = Instant::now();
        let err = send(conn, Method::POST, "/up", Framing::Chunked, body)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::BackendTimeout), "{err:?}");
        assert!(started.elapsed() >= SHORT);
        done_tx.send(()).unwrap();
    };
    tokio::join!(script, client);
}

// ---- failures -------------------------------------------------------------

#[tokio::test]
async fn a_connection_closed_while_idle_is_discarded_on_checkout() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        drop(peer);
        closed_tx.send(()).unwrap();
        let mut second = backend.accept().await;
        second.head().await;
        second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        second
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        drop(r);
        assert_eq!(pool.idle(), 1);
        closed_rx.await.unwrap();
        // Once the runtime has seen the socket's events, as it has between
        // any two requests under load.
        tokio::task::yield_now().await;
        let conn = pool.checkout().await.unwrap();
        assert!(!conn.is_reused(), "the closed one was dropped");
        assert_eq!(pool.idle(), 0);
        response(get(conn, "/").await.unwrap());
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn eof_right_after_sending_on_a_reused_connection_is_stale() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        // The race a keep-alive timeout makes: the request arrives as the
        // backend closes.
        peer.head().await;
        drop(peer);
        // A fresh connection failing the same way is not stale.
        let mut fresh = backend.accept().await;
        fresh.head().await;
        drop(fresh);
    };
    let client = async {
        response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        let conn = pool.checkout().await.unwrap();
        assert!(conn.is_reused());
        let err = get(conn, "/").await.unwrap_err();
        assert!(matches!(err, SendError::Stale { .. }), "{err:?}");
        let err = get(pool.connect().await.unwrap(), "/").await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::BackendFailed {
                    request_complete: true,
                    ..
                }
            ),
            "{err:?}"
        );
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn eof_inside_a_response_head_is_a_backend_failure_even_when_reused() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nConte").await;
    };
    let client = async {
        response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        let err = get(pool.checkout().await.unwrap(), "/").await.unwrap_err();
        assert!(matches!(err, SendError::BackendFailed { .. }), "{err:?}");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_silent_backend_times_out() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, Duration::from_secs(5)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        let _ = done_rx.await;
    };
    let client = async {
        let started = Instant::now();
        let err = get(pool.checkout().await.unwrap(), "/").await.unwrap_err();
        assert!(matches!(err, SendError::BackendTimeout), "{err:?}");
        let took = started.elapsed();
        assert!(took >= SHORT && took < SHORT * 5, "{took:?}");
        done_tx.send(()).unwrap();
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_body_that_stalls_or_stops_short_fails_the_body() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, Duration::from_secs(5)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        let _ = done_rx.await;
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        let err = read_all(r.into_body()).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        done_tx.send(()).unwrap();
        let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
        let err = read_all(r.into_body()).await.unwrap_err();
        assert!(matches!(err, BodyError::Closed), "{err:?}");
        assert_eq!(pool.idle(), 0);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_failing_client_body_is_the_clients_fault() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        for _ in 0..2 {
            let mut peer = backend.accept().await;
            peer.head().await;
            peer.expect_eof().await;
        }
    };
    let client = async {
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
        tx.send(Err(io::Error::other("the client went away"))).await.unwrap();
        let err = send(
            pool.checkout().await.unwrap(),
            Method::POST,
            "/",
            Framing::Length(100),
            body,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SendError::ClientBody(_)), "{err:?}");
        assert!(err.to_string().contains("request body"), "{err}");
        // Shorter than its Content-Length.
        let body = Full::new(Bytes::from_static(b"short"));
        let err = send(
            pool.checkout().await.unwrap(),
            Method::POST,
            "/",
            Framing::Length(100),
            body,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SendError::ClientBody(_)), "{err:?}");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn a_stalled_client_body_is_a_client_timeout() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(Duration::from_secs(5), SHORT));
    let script = async {
        let mut peer = backend.accept().await;
        peer.head().await;
        peer.expect(b"4\r\npart\r\n").await;
        peer.expect_eof().await;
    };
    let client = async {
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
        let started = Instant::now();
        let err = send(
            pool.checkout().await.unwrap(),
            Method::POST,
            "/",
            Framing::Chunked,
            body,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SendError::ClientTimeout), "{err:?}");
        assert!(started.elapsed() >= SHORT);
        drop(tx);
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn garbage_heads_are_bad_responses() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let cases: Vec<&[u8]> = vec![
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        huge.as_bytes(),
    ];
    let script = async {
        for case in &cases {
            let mut peer = backend.accept().await;
            peer.head().await;
            // The client may close before all is written.
            let _ = peer.stream.write_all(case).await;
        }
    };
    let client = async {
        for case in &cases {
            let err = get(pool.checkout().await.unwrap(), "/").await.unwrap_err();
            assert!(
                matches!(err, SendError::BadResponse(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(&case[..case.len().min(40)])
            );
        }
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn bad_chunks_are_body_errors() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        for chunk in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"fffffffffffffffff\r\n"] {
            let mut peer = backend.accept().await;
            peer.head().await;
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            peer.send(chunk).await;
            peer.expect_eof().await;
        }
    };
    let client = async {
        for _ in 0..3 {
            let r = response(get(pool.checkout().await.unwrap(), "/").await.unwrap());
            let err = read_all(r.into_body()).await.unwrap_err();
            assert!(matches!(err, BodyError::BadChunk(_)), "{err:?}");
        }
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn random_garbage_from_the_backend_never_panics() {
    let backend = Backend::new().await;
    let pool = backend.pool(timeouts(SHORT, SHORT));
    let mut rng = fastrand::Rng::with_seed(42);
    let pieces: &[&[u8]] = &[
        b"HTTP/1.1 ",
        b"HTTP/1.0 ",
        b"200 OK\r\n",
        b"101 S\r\n",
        b"103 E\r\n",
        b"Content-Length: 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"zz",
        b"\n",
        b"\0",
    ];
    let inputs: Vec<Vec<u8>> = (0..150)
        .map(|_| {
            (0..rng.usize(0..12))
                .flat_map(|_| pieces[rng.usize(..pieces.len())].to_vec())
                .collect()
        })
        .collect();
    let script = async {
        for input in &inputs {
            let mut peer = backend.accept().await;
            peer.head().await;
            let _ = peer.stream.write_all(input).await;
            // Then close: every exchange ends within the bound.
        }
    };
    let client = async {
        for _ in &inputs {
            let conn = pool.connect().await.unwrap();
            if let Ok(Answer::Response(r, _)) = get(conn, "/").await {
                let _ = read_all(r.into_body()).await;
            }
        }
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn refused_connects_are_the_backends_fault() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = Connection::connect(addr, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    assert!(!err.is_local());
}

// ---- bounded buffering ----------------------------------------------------

#[tokio::test]
async fn a_large_body_streams_in_bounded_frames_and_waits_for_its_reader() {
    const TOTAL: usize = 5 * 1024 * 1024;
    let backend = Backend::with_small_send_buffer();
    let pool = backend.pool(Timeouts::default());
    let written = Arc::new(AtomicUsize::new(0));
    // Tells when the backend's writes block: the client is not reading.
    let (blocked_tx, mut blocked_rx) = tokio::sync::watch::channel(0usize);
    let script = {
        let written = Arc::clone(&written);
        let backend = &backend;
        async move {
            let mut peer = backend.accept().await;
            peer.head().await;
            peer.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes())
                .await;
            let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
            let mut at = 0;
            while at < TOTAL {
                match peer.stream.try_write(&data[at..(at + 64 * 1024).min(TOTAL)]) {
                    Ok(n) => {
                        at += n;
                        written.store(at, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked_tx.send_replace(at);
                        within(peer.stream.writable()).await.unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            peer
        }
    };
    let client = async {
        let r = response(get(pool.checkout().await.unwrap(), "/big").await.unwrap());
        let mut body = r.into_body();
        let mut got = 0usize;
        let check = |frame: Frame<Bytes>, got: &mut usize| {
            let data = frame.into_data().unwrap();
            assert!(data.len() <= READ_BUF_SIZE, "a frame of {}", data.len());
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, ((*got + i) % 251) as u8);
            }
            *got += data.len();
        };
        for _ in 0..3 {
            let frame = within(body.frame()).await.unwrap().unwrap();
            check(frame, &mut got);
        }
        // Stop reading: the backend soon blocks, because nothing is read
        // ahead of the reader.
        let at_block = *within(blocked_rx.wait_for(|&at| at == written.load(Ordering::Relaxed)))
            .await
            .unwrap();
        assert!(at_block < TOTAL, "the backend could not send it all");
        assert!(body.buffered() <= READ_BUF_SIZE);
        while let Some(frame) = within(body.frame()).await {
            check(frame.unwrap(), &mut got);
            assert!(body.buffered() <= READ_BUF_SIZE);
        }
        assert_eq!(got, TOTAL);
        assert_eq!(written.load(Ordering::Relaxed), TOTAL);
        assert_eq!(pool.idle(), 1);
    };
    tokio::join!(script, client);
}

// ---- the pool -------------------------------------------------------------

#[tokio::test]
async fn close_all_closes_idle_connections_and_stops_reuse() {
    let backend = Backend::new().await;
    let pool = backend.pool(Timeouts::default());
    let script = async {
        let mut a = backend.accept().await;
        a.head().await;
        a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let mut b = backend.accept().await;
        b.head().await;
        b.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n").await;
        a.expect_eof().await;
        b.send(b"ok").await;
        b.expect_eof().await;
    };
    let client = async {
        let first = pool.checkout().await.unwrap();
        let second = pool.connect().await.unwrap();
        response(get(first, "/").await.unwrap());
        assert_eq!(pool.idle(), 1);
        let r = response(get(second, "/").await.unwrap());
        pool.close_all();
        assert_eq!(pool.idle(), 0);
        assert_eq!(read_all(r.into_body()).await.unwrap().0, "ok");
        assert_eq!(pool.idle(), 0, "the connection in flight closed instead of returning");
    };
    tokio::join!(script, client);
}

#[tokio::test]
async fn idle_connections_are_lifo_and_capped() {
    let backend = Backend::new().await;
    let pool = Pool::new(
        backend.addr,
        PoolConfig {
            max_idle: 2,
            connect_timeout: Duration::from_secs(2),
            timeouts: Timeouts::default(),
        },
    );
    let script = async {
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(backend.accept().await);
        }
        for p in &mut peers {
            p.head().await;
            p.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        }
        peers
    };
    let client = async {
        let conns = [
            pool.connect().await.unwrap(),
            pool.connect().await.unwrap(),
            pool.connect().await.unwrap(),
        ];
        let addrs: Vec<_> = conns.iter().map(|c| c.local_addr().unwrap()).collect();
        for conn in conns {
            response(get(conn, "/").await.unwrap());
        }
        assert_eq!(pool.idle(), 2, "capped");
        assert_eq!(
            pool.take_idle().unwrap().local_addr().unwrap(),
            addrs[1],
            "last in, first out"
        );
        assert_eq!(pool.take_idle().unwrap().local_addr().unwrap(), addrs[0]);
        assert!(pool.take_idle().is_none());
    };
    tokio::join!(script, client);
}
