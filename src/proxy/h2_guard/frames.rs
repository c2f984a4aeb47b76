//! HTTP/2 frames as a byte stream sees them: where each frame starts, and how many frames of
//! each kind a client sent in the current window. Pure functions over bytes and a clock value,
//! fed in whatever pieces the socket delivers, so the counting is fuzzed and unit-tested
//! without a connection.
//!
//! h2 0.4 bounds resets of streams it has not handed out yet, CONTINUATION frames per header
//! block, decoded header size and small DATA frames, but not a client that resets streams
//! after they were answered, nor floods of PING, SETTINGS or WINDOW_UPDATE (each is
//! acknowledged or applied, at a CPU cost the client does not pay). [`FrameGuard`] counts
//! those per connection in a fixed window and says when one kind is over its limit.

use crate::metrics::H2Abuse;
use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4), which comes before the first frame.
pub(crate) const PREFACE_LEN: usize = 24;
const HEAD_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;

/// ENHANCE_YOUR_CALM (RFC 9113 §7).
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The window the counts are kept over; every count starts again from zero when it ends.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// A frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; HEAD_LEN]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Walks a stream of frames fed in arbitrary pieces: a header may be split across reads, a
/// payload is skipped without being looked at.
#[derive(Clone, Debug)]
pub(crate) struct FrameCursor {
    /// Bytes still to pass over before the next header: the preface, or a payload's rest.
    skip: usize,
    head: [u8; HEAD_LEN],
    /// How much of `head` is filled.
    have: usize,
}

impl FrameCursor {
    /// The bytes a client sends: the preface, then frames.
    pub(crate) fn client() -> FrameCursor {
        FrameCursor {
            skip: PREFACE_LEN,
            head: [0; HEAD_LEN],
            have: 0,
        }
    }

    /// The bytes a server sends: frames from the first byte.
    pub(crate) fn server() -> FrameCursor {
        FrameCursor {
            skip: 0,
            ..FrameCursor::client()
        }
    }

    /// Whether the bytes fed so far end exactly at a frame's end (or the preface's).
    pub(crate) fn at_boundary(&self) -> bool {
        self.skip == 0 && self.have == 0
    }

    /// Passes over `bytes`, calling `on_head` with each frame header completed in them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEAD_LEN - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEAD_LEN {
                self.have = 0;
                let head = FrameHead::parse(&self.head);
                self.skip = head.len as usize;
                on_head(head);
            }
        }
    }
}

/// The frame kinds a client could flood, each with its limit per [`WINDOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// RST_STREAM, whatever the stream's state: resets after the answer's head are the
    /// rapid-reset variant h2 does not bound, and each one cost the app a request.
    Reset,
    Ping,
    Settings,
    WindowUpdate,
    /// DATA with no payload that does not end its stream: carries nothing.
    EmptyData,
}

impl Counted {
    const ALL: [Counted; 5] = [
        Counted::Reset,
        Counted::Ping,
        Counted::Settings,
        Counted::WindowUpdate,
        Counted::EmptyData,
    ];

    fn of(head: &FrameHead) -> Option<Counted> {
        match head.kind {
            RST_STREAM => Some(Counted::Reset),
            PING => Some(Counted::Ping),
            SETTINGS => Some(Counted::Settings),
            WINDOW_UPDATE => Some(Counted::WindowUpdate),
            DATA if head.len == 0 && head.flags & END_STREAM == 0 => Some(Counted::EmptyData),
            _ => None,
        }
    }

    /// Most frames of this kind one connection may send in a [`WINDOW`]. Each is far above
    /// what a browser or an h2 library sends (a few SETTINGS and PINGs per connection, a reset
    /// per stream given up) and far below a flood (50,000 in 0.2 s); 500 resets keep the app's
    /// requests from one resetting connection under about 1,100 even across a window's edge.
    /// WINDOW_UPDATEs and PINGs are counted net of the DATA frames the server sent (see
    /// [`FrameGuard::wrote`]), so a fast download never reaches theirs.
    pub(crate) fn limit(self) -> u32 {
        match self {
            Counted::Reset => 500,
            Counted::Ping => 1_000,
            Counted::Settings => 100,
            Counted::WindowUpdate => 10_000,
            Counted::EmptyData => 1_000,
        }
    }

    /// The metric's reason for a connection closed over this kind's limit.
    pub(crate) fn abuse(self) -> H2Abuse {
        match self {
            Counted::Reset => H2Abuse::RstStreamFlood,
            Counted::Ping => H2Abuse::PingFlood,
            Counted::Settings => H2Abuse::SettingsFlood,
            Counted::WindowUpdate => H2Abuse::WindowUpdateFlood,
            Counted::EmptyData => H2Abuse::EmptyDataFlood,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Counted::Reset => "RST_STREAM",
            Counted::Ping => "PING",
            Counted::Settings => "SETTINGS",
            Counted::WindowUpdate => "WINDOW_UPDATE",
            Counted::EmptyData => "empty DATA",
        }
    }
}

/// One kind of frame over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {} frames within {:?} (limit {})", .count, .kind.name(), WINDOW, .kind.limit())]
pub(crate) struct Flood {
    pub(crate) kind: Counted,
    pub(crate) count: u32,
}

/// Counts a client's frames by kind over a fixed window.
#[derive(Clone, Debug)]
pub(crate) struct FrameGuard {
    cursor: FrameCursor,
    /// The server's frames, in what it writes.
    out: FrameCursor,
    counts: [u32; Counted::ALL.len()],
    window_start: Option<Instant>,
    /// Highest stream a HEADERS frame opened: the last one a GOAWAY can call processed.
    last_stream: u32,
}

impl FrameGuard {
    pub(crate) fn new() -> FrameGuard {
        FrameGuard {
            cursor: FrameCursor::client(),
            out: FrameCursor::server(),
            counts: [0; Counted::ALL.len()],
            window_start: None,
            last_stream: 0,
        }
    }

    /// Takes the next bytes the client sent, read at `now`; the first kind over its limit
    /// is an error (and stays one: the connection is to be closed).
    pub(crate) fn read(&mut self, bytes: &[u8], now: Instant) -> Result<(), Flood> {
        self.roll(now);
        let (counts, last_stream) = (&mut self.counts, &mut self.last_stream);
        let mut flood = None;
        self.cursor.feed(bytes, |head| {
            if head.kind == HEADERS {
                *last_stream = (*last_stream).max(head.stream);
            }
            if let Some(kind) = Counted::of(&head) {
                let i = kind as usize;
                counts[i] = counts[i].saturating_add(1);
                if counts[i] > kind.limit() && flood.is_none() {
                    flood = Some(Flood {
                        kind,
                        count: counts[i],
                    });
                }
            }
        });
        flood.map_or(Ok(()), Err)
    }

    /// Takes the next bytes the server wrote. Each DATA frame with a payload earns the client
    /// two WINDOW_UPDATEs (its stream's and the connection's) and a PING: a client reading a
    /// fast download sends a WINDOW_UPDATE per half window read, and some libraries ping to
    /// size their window while data flows (hyper's adaptive window).
    pub(crate) fn wrote(&mut self, bytes: &[u8], now: Instant) {
        self.roll(now);
        let counts = &mut self.counts;
        self.out.feed(bytes, |head| {
            if head.kind == DATA && head.len > 0 {
                let wu = &mut counts[Counted::WindowUpdate as usize];
                *wu = wu.saturating_sub(2);
                let ping = &mut counts[Counted::Ping as usize];
                *ping = ping.saturating_sub(1);
            }
        });
    }

    /// Whether what the server wrote so far ends between two frames: the only place another
    /// frame (a GOAWAY) may go.
    pub(crate) fn between_frames(&self) -> bool {
        self.out.at_boundary()
    }

    pub(crate) fn last_stream(&self) -> u32 {
        self.last_stream
    }

    /// Starts a new window when the current one is over.
    fn roll(&mut self, now: Instant) {
        if self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW)
        {
            self.window_start = Some(now);
            self.counts = [0; Counted::ALL.len()];
        }
    }
}

/// A GOAWAY frame: `last_stream` is the highest stream that may have been processed, and
/// `debug` (opaque to the client, shown in its logs) says why.
pub(crate) fn goaway(last_stream: u32, code: u32, debug: &[u8]) -> Vec<u8> {
    let len = (8 + debug.len()).min(0xff_ffff) as u32;
    let mut frame = Vec::with_capacity(HEAD_LEN + len as usize);
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&debug[..len as usize - 8]);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn heads_are_found_after_the_preface_and_payloads_skipped() {
        let mut bytes = preface();
        bytes.extend(frame(SETTINGS, 0, 0, &[0; 12]));
        // A payload that looks like frame headers is not read as one.
        bytes.extend(frame(DATA, 0, 1, &frame(PING, 0, 0, &[0; 8])));
        bytes.extend(frame(HEADERS, 0x5, 3, b"abc"));
        let mut seen = Vec::new();
        let mut c = FrameCursor::client();
        c.feed(&bytes, |h| seen.push((h.kind, h.len, h.stream)));
        assert_eq!(
            seen,
            vec![(SETTINGS, 12, 0), (DATA, 17, 1), (HEADERS, 3, 3)]
        );
        assert!(c.at_boundary());
        c.feed(&frame(PING, 0, 0, &[0; 8])[..5], |_| {});
        assert!(!c.at_boundary());
    }

    #[test]
    fn each_kind_closes_one_past_its_limit_and_not_before() {
        for kind in Counted::ALL {
            let one = match kind {
                Counted::Reset => frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]),
                Counted::Ping => frame(PING, 0, 0, &[0; 8]),
                Counted::Settings => frame(SETTINGS, 0, 0, &[]),
                Counted::WindowUpdate => frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1]),
                Counted::EmptyData => frame(DATA, 0, 1, &[]),
            };
            let mut g = FrameGuard::new();
            let t0 = Instant::now();
            g.read(&preface(), t0).unwrap();
            for _ in 0..kind.limit() {
                g.read(&one, t0).unwrap();
            }
            assert_eq!(
                g.read(&one, t0),
                Err(Flood {
                    kind,
                    count: kind.limit() + 1
                })
            );
        }
    }

    #[test]
    fn counts_start_again_each_window_and_ordinary_frames_are_free() {
        let ping = frame(PING, 0, 0, &[0; 8]);
        let mut g = FrameGuard::new();
        let t0 = Instant::now();
        g.read(&preface(), t0).unwrap();
        for w in 0..3u32 {
            let at = t0 + WINDOW * w;
            for _ in 0..Counted::Ping.limit() {
                g.read(&ping, at).unwrap();
            }
        }
        // DATA that ends its stream or carries bytes, HEADERS, CONTINUATION: not counted.
        let mut g = FrameGuard::new();
        g.read(&preface(), t0).unwrap();
        for i in 0..5_000u32 {
            g.read(&frame(HEADERS, 0x4, 2 * i + 1, b"x"), t0).unwrap();
            g.read(&frame(DATA, END_STREAM, 2 * i + 1, &[]), t0)
                .unwrap();
            g.read(&frame(DATA, 0, 2 * i + 1, b"y"), t0).unwrap();
        }
        assert_eq!(g.last_stream(), 9_999);
    }

    #[test]
    fn data_sent_pays_for_window_updates_and_pings() {
        let t0 = Instant::now();
        let mut g = FrameGuard::new();
        g.read(&preface(), t0).unwrap();
        let wu = frame(WINDOW_UPDATE, 0, 1, &[0, 0, 0x80, 0]);
        let ping = frame(PING, 0, 0, &[0; 8]);
        // A download: 20,000 DATA frames answered by 40,000 WINDOW_UPDATEs and 20,000 PINGs.
        for _ in 0..20_000 {
            g.wrote(&frame(DATA, 0, 1, &[0; 16]), t0);
            g.read(&wu, t0).unwrap();
            g.read(&wu, t0).unwrap();
            g.read(&ping, t0).unwrap();
        }
        // Empty DATA earns nothing; and the GOAWAY may only go between the server's frames.
        g.wrote(&frame(DATA, END_STREAM, 1, &[]), t0);
        let mut over = Ok(());
        for _ in 0..=Counted::WindowUpdate.limit() {
            over = over.and(g.read(&wu, t0));
        }
        assert_eq!(over.unwrap_err().kind, Counted::WindowUpdate);
        assert!(g.between_frames());
        g.wrote(&frame(DATA, 0, 1, &[0; 16])[..12], t0);
        assert!(!g.between_frames());
    }

    #[test]
    fn goaway_is_one_well_formed_frame() {
        let f = goaway(7, ENHANCE_YOUR_CALM, b"flood");
        let mut c = FrameCursor::server();
        let mut heads = Vec::new();
        c.feed(&f, |h| heads.push(h));
        assert_eq!(
            heads,
            vec![FrameHead {
                len: 13,
                kind: GOAWAY,
                flags: 0,
                stream: 0
            }]
        );
        assert!(c.at_boundary());
        assert_eq!(&f[9..17], &[0, 0, 0, 7, 0, 0, 0, 11]);
    }

    /// Frames as (kind, flags, payload length), in a byte stream cut at arbitrary points.
    fn frames() -> impl Strategy<Value = Vec<(u8, u8, usize)>> {
        proptest::collection::vec((0u8..10, any::<u8>(), 0usize..40), 0..60)
    }

    proptest! {
        /// However the stream is split into reads, the same headers are found, the verdict is
        /// the same, and the cursor is at a boundary exactly where a frame ends.
        #[test]
        fn splits_do_not_change_what_is_seen(
            list in frames(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut bytes = preface();
            let mut ends = vec![bytes.len()];
            for (i, (kind, flags, len)) in list.iter().enumerate() {
                bytes.extend(frame(*kind, *flags, i as u32, &vec![0xAB; *len]));
                ends.push(bytes.len());
            }
            let mut whole = FrameCursor::client();
            let mut want = Vec::new();
            whole.feed(&bytes, |h| want.push(h));
            prop_assert_eq!(want.len(), list.len());

            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut pieces = FrameCursor::client();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                pieces.feed(&bytes[w[0]..w[1]], |h| got.push(h));
                prop_assert_eq!(pieces.at_boundary(), ends.contains(&w[1]));
            }
            prop_assert_eq!(&got, &want);

            let t0 = Instant::now();
            let mut one = FrameGuard::new();
            let verdict = one.read(&bytes, t0);
            let mut split = FrameGuard::new();
            let mut split_verdict = Ok(());
            for w in cuts.windows(2) {
                split_verdict = split_verdict.and(split.read(&bytes[w[0]..w[1]], t0));
            }
            prop_assert_eq!(verdict.is_ok(), split_verdict.is_ok());
        }

        /// Any bytes at all: no panic, and the cursor never claims more than it was fed.
        #[test]
        fn garbage_is_survived(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..20))
        {
            let mut g = FrameGuard::new();
            let t0 = Instant::now();
            for c in &chunks {
                let _ = g.read(c, t0);
            }
        }
    }
}
