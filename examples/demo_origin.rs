//! The demo SSE app: a small origin to put behind sse-sidecar.
//!
//! ```text
//! cargo run --release --example demo_origin -- --listen 127.0.0.1:3000
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:3000/events
//! ```
//!
//! `make run` starts it together with the sidecar on :8080; use port 8080 in the
//! curl above to go through the sidecar, and open <http://127.0.0.1:8080/>.
//!
//! | endpoint | what it serves |
//! |---|---|
//! | `GET /` | a page that opens `EventSource('/events')` and shows events and the connection state |
//! | `GET /events` | a notification every second with an `id:`; a reconnect resumes after `Last-Event-ID` |
//! | `GET\|POST /v1/chat/completions` | OpenAI-style token chunks, ~20 tokens/s, then `data: [DONE]` |
//! | `GET /jobs/progress` | `event: progress` from 0 to 100 %, then `event: done` |
//! | `GET /healthz` | 200 `ok` |
//!
//! ```text
//! curl -N -H 'Content-Type: application/json' -d '{"messages":[{"role":"user","content":"hi"}]}' \
//!      http://127.0.0.1:3000/v1/chat/completions
//! ```
//!
//! Only std and tokio: the HTTP/1.1 here is hand-written and minimal (keep-alive,
//! `Content-Length` or chunked request bodies, chunked streams). Every stream watches
//! its socket, so a client that leaves stops the generation at once — what the
//! sidecar must preserve for an app that pays per generated token.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INDEX_HTML: &str = include_str!("demo/index.html");
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:3000".to_string();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                eprintln!("usage: demo_origin [--listen ADDR]   (default 127.0.0.1:3000)");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(&listen).await?;
    println!("demo origin listening on http://{}", listener.local_addr()?);
    loop {
        let (sock, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let mut conn = Conn {
                sock,
                peer,
                buf: Vec::new(),
            };
            if let Err(e) = conn.serve().await {
                println!("{peer}: connection error: {e}");
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        found.next().map(|(_, v)| v.as_str())
    }
}

type Events = Box<dyn Iterator<Item = String> + Send>;

enum Reply {
    /// A complete response: status, content type, body.
    Full(&'static str, &'static str, &'static str),
    /// A `text/event-stream` response: one event per period until the iterator ends.
    Stream(Duration, Events),
}

fn route(req: &Request, peer: SocketAddr) -> Reply {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") => Reply::Full("200 OK", "text/html; charset=utf-8", INDEX_HTML),
        ("GET", "/healthz") => Reply::Full("200 OK", "text/plain", "ok\n"),
        ("GET", "/events") => notifications(req, peer),
        ("GET" | "POST", "/v1/chat/completions") => chat(req, peer),
        ("GET", "/jobs/progress") => job(),
        (_, "/" | "/healthz" | "/events" | "/v1/chat/completions" | "/jobs/progress") => {
            Reply::Full(
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n",
            )
        }
        _ => Reply::Full("404 Not Found", "text/plain", "not found\n"),
    }
}

/// `GET /events`: one notification a second, numbered by `id:`, resuming after `Last-Event-ID`.
fn notifications(req: &Request, peer: SocketAddr) -> Reply {
    let last = req.header("last-event-id");
    let first = last
        .and_then(|id| id.trim().parse::<u64>().ok())
        .map_or(1, |id| id + 1);
    match last {
        Some(id) => println!("{peer} /events: Last-Event-ID {id:?}, resuming at {first}"),
        None => println!("{peer} /events: no Last-Event-ID, starting at 1"),
    }
    let events = (first..).map(|n| {
        let ms = unix_ms();
        format!("id: {n}\ndata: {{\"n\":{n},\"text\":\"notification {n}\",\"unix_ms\":{ms}}}\n\n")
    });
    Reply::Stream(Duration::from_secs(1), Box::new(events))
}

/// `GET|POST /v1/chat/completions`: an LLM-style token stream in OpenAI's chunk format.
fn chat(req: &Request, peer: SocketAddr) -> Reply {
    let intro = if req.method == "POST" {
        let chars = prompt_len(&String::from_utf8_lossy(&req.body));
        println!("{peer} /v1/chat/completions: prompt of {chars} characters");
        format!("You sent a {chars}-character prompt. ")
    } else {
        "You sent a GET, so there is no prompt. ".to_string()
    };
    let answer = "Here is the answer, streamed one token at a time, the way a language model \
                  writes it. Each token is its own event, so every proxy on the way must pass \
                  it on at once instead of buffering the response.";
    let tokens: Vec<String> = intro.split_inclusive(' ').map(String::from).collect();
    let tokens = tokens
        .into_iter()
        .chain(answer.split_inclusive(' ').map(String::from));
    let chunk = |delta: &str, finish: &str| {
        let created = unix_ms() / 1000;
        format!(
            "data: {{\"id\":\"chatcmpl-demo\",\"object\":\"chat.completion.chunk\",\
             \"created\":{created},\"model\":\"demo\",\"choices\":[{{\"index\":0,\
             \"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let events = std::iter::once(chunk(r#"{"role":"assistant"}"#, "null"))
        .chain(
            tokens.map(move |t| chunk(&format!(r#"{{"content":"{}"}}"#, json_escape(&t)), "null")),
        )
        .chain([chunk("{}", r#""stop""#), "data: [DONE]\n\n".to_string()]);
    Reply::Stream(Duration::from_millis(50), Box::new(events))
}

/// `GET /jobs/progress`: named `progress` events from 0 to 100 %, then one `done` event.
fn job() -> Reply {
    let events = (0..=100)
        .step_by(5)
        .map(|p| format!("event: progress\ndata: {{\"percent\":{p}}}\n\n"))
        .chain(["event: done\ndata: {\"percent\":100,\"result\":\"ok\"}\n\n".to_string()]);
    Reply::Stream(Duration::from_millis(150), Box::new(events))
}

/// One client connection and the bytes read past the current request.
struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    /// Requests in a keep-alive loop, so the sidecar can pool the connection.
    async fn serve(&mut self) -> io::Result<()> {
        while let Some(req) = self.read_request().await? {
            println!("{} {} {}", self.peer, req.method, req.path);
            match route(&req, self.peer) {
                Reply::Full(status, ctype, body) => {
                    let len = body.len();
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n\r\n"
                    );
                    self.sock
                        .write_all(format!("{head}{body}").as_bytes())
                        .await?;
                }
                Reply::Stream(period, events) => {
                    if !self.stream(&req.path, period, events).await? {
                        return Ok(()); // the client left mid-stream
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes one event per `period` as a chunk while watching the socket. Returns
    /// false when the client went away, true when the stream ended cleanly.
    async fn stream(
        &mut self,
        what: &str,
        period: Duration,
        mut events: Events,
    ) -> io::Result<bool> {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        self.sock.write_all(head.as_bytes()).await?;
        let peer = self.peer;
        let (mut rd, mut wr) = self.sock.split();
        let mut tick = tokio::time::interval(period);
        let mut scratch = [0u8; 1024];
        let mut sent = 0u64;
        loop {
            tokio::select! {
                // The client closed (FIN) or reset: stop generating right away.
                r = rd.read(&mut scratch) => match r {
                    Ok(0) | Err(_) => {
                        println!("{peer} {what}: client disconnected after {sent} events; stopped generating");
                        return Ok(false);
                    }
                    Ok(n) => self.buf.extend_from_slice(&scratch[..n]), // a pipelined request
                },
                // Time for the next event, or the clean end of a finite stream.
                _ = tick.tick() => match events.next() {
                    Some(ev) => {
                        let chunk = format!("{:x}\r\n{ev}\r\n", ev.len());
                        if let Err(e) = wr.write_all(chunk.as_bytes()).await {
                            println!("{peer} {what}: write failed after {sent} events ({e}); stopped generating");
                            return Ok(false);
                        }
                        sent += 1;
                    }
                    None => {
                        wr.write_all(b"0\r\n\r\n").await?;
                        println!("{peer} {what}: finished after {sent} events");
                        return Ok(true);
                    }
                },
            }
        }
    }

    /// Reads one request, head and body. `None` when the client closed between requests.
    async fn read_request(&mut self) -> io::Result<Option<Request>> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("request head too large"));
            }
            if !self.read_more().await? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(bad("connection closed mid-request")),
                };
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut start = lines.next().unwrap_or_default().split(' ');
        let method = start.next().unwrap_or_default().to_string();
        let path = start
            .next()
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap_or("/")
            .to_string();
        let headers = lines.filter_map(|l| l.split_once(':'));
        let headers = headers
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut req = Request {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        if req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.sock
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        if req
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line = self.take_line().await?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    while !self.take_line().await?.is_empty() {} // trailers
                    break;
                }
                let chunk = self.take(size + 2).await?; // with its CRLF
                req.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = req.header("content-length") {
            req.body = self
                .take(len.parse().map_err(|_| bad("bad content-length"))?)
                .await?;
        }
        Ok(Some(req))
    }

    /// Removes and returns the next `n` bytes, reading as needed.
    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if n > MAX_BODY {
            return Err(bad("request body too large"));
        }
        while self.buf.len() < n {
            if !self.read_more().await? {
                return Err(bad("connection closed mid-body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn take_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || !self.read_more().await? {
                return Err(bad("bad chunked body"));
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.sock.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

/// Length in characters of the last `"content"` (chat) or `"prompt"` (completions)
/// string of a JSON body. A scan rather than a JSON parser keeps the demo dependency-free.
fn prompt_len(body: &str) -> usize {
    let keys = ["\"content\"", "\"prompt\""];
    let key_end = keys
        .iter()
        .filter_map(|k| body.rfind(k).map(|i| i + k.len()))
        .max();
    let value = key_end.and_then(|i| body[i..].trim_start().strip_prefix(':'));
    let mut chars = match value.and_then(|v| v.trim_start().strip_prefix('"')) {
        Some(v) => v.chars(),
        None => return 0,
    };
    let mut len = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' if chars.next() == Some('u') => {
                chars.nth(3); // \uXXXX is one character
            }
            _ => {}
        }
        len += 1;
    }
    len
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
