//! Learned SSE routes (`sse.learn`): the routes whose answer turned out to be an event stream
//! although the request gave no hint (a `fetch()` POST with `Accept: */*`), so that later
//! requests to them are SSE candidates without any configuration.
//!
//! A route is a method and a path without its query, with the segments that look like ids
//! generalised ([`is_id_like`]), so `/api/chat/8f14e45f…/stream` is one route for every chat.
//! The table is bounded ([`CAPACITY`], least recently used out), and a route that answers
//! anything but a stream [`MISSES_TO_FORGET`] times in a row is forgotten.
//!
//! Every request that is not obviously a candidate is looked up, so the lookup is a read lock,
//! one hash of the path's bytes and a few atomics, with no allocation; an empty table costs one
//! atomic load. Recency is an atomic tick per route, so a hit needs no write lock; the write
//! lock is taken only to learn or forget a route, and finding the least recently used one is a
//! scan of at most [`CAPACITY`] entries then — learning is rare (once per route), so that is
//! cheaper overall than keeping a linked list in order on every hit.

use http::Method;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

/// Most routes kept; past it the least recently used one is dropped.
pub(crate) const CAPACITY: usize = 1_000;

/// Non-stream answers in a row after which a learned route is forgotten.
pub(crate) const MISSES_TO_FORGET: u8 = 3;

/// Shortest run of hex or base64url characters taken for an id (a 64-bit hex id has 16).
const MIN_TOKEN_ID: usize = 16;

/// The table of learned routes. Shared by every thread; all methods take `&self`.
pub(crate) struct LearnedRoutes {
    capacity: usize,
    /// Keyed by [`route_hash`]; the [`Route`] stored there is compared with the request, so a
    /// hash collision can only make a lookup miss, never match another route.
    table: RwLock<HashMap<u64, Route>>,
    hasher: RandomState,
    /// Ticks handed out to hits, for least-recently-used eviction.
    clock: AtomicU64,
    /// Routes in the table, readable without the lock.
    len: AtomicUsize,
}

/// One learned route.
struct Route {
    method: Method,
    /// The path's segments (the text between `/`), ids generalised.
    segments: Box<[Segment]>,
    last_used: AtomicU64,
    /// Non-stream answers since the last stream.
    misses: AtomicU8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Id,
}

/// A route just learned, for its log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewRoute {
    /// `POST /api/chat/{id}/stream`.
    pub(crate) route: String,
    /// The `sse.paths` prefix that would make it a candidate from the start.
    pub(crate) prefix: String,
    /// The least recently used route was dropped to make room for it.
    pub(crate) evicted: bool,
}

impl LearnedRoutes {
    pub(crate) fn new() -> LearnedRoutes {
        LearnedRoutes::with_capacity(CAPACITY)
    }

    fn with_capacity(capacity: usize) -> LearnedRoutes {
        LearnedRoutes {
            capacity,
            table: RwLock::new(HashMap::with_capacity(capacity.min(64))),
            hasher: RandomState::new(),
            clock: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        }
    }

    /// Routes learned now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether `method path` is a learned route; a hit counts as a use.
    pub(crate) fn contains(&self, method: &Method, path: &str) -> bool {
        if self.len() == 0 {
            return false;
        }
        let key = self.route_hash(method, path);
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        match table.get(&key) {
            Some(r) if r.matches(method, path) => {
                let tick = self.clock.fetch_add(1, Ordering::Relaxed);
                r.last_used.store(tick, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Learns `method path` (an event stream answered it). `Some` when the route is new.
    pub(crate) fn learn(&self, method: &Method, path: &str) -> Option<NewRoute> {
        let key = self.route_hash(method, path);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = table.get(&key).filter(|r| r.matches(method, path)) {
            r.last_used.store(tick, Ordering::Relaxed);
            r.misses.store(0, Ordering::Relaxed);
            return None;
        }
        let mut evicted = false;
        if table.len() >= self.capacity && !table.contains_key(&key) {
            let oldest = table
                .iter()
                .min_by_key(|(_, r)| r.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                evicted = table.remove(&k).is_some();
            }
        }
        let route = Route {
            method: method.clone(),
            segments: path.split('/').map(Segment::of).collect(),
            last_used: AtomicU64::new(tick),
            misses: AtomicU8::new(0),
        };
        // A colliding route under the same key (vanishingly rare) is replaced.
        let replaced = table.contains_key(&key);
        let new = NewRoute {
            route: route.to_string(),
            prefix: route.prefix(),
            evicted: evicted || replaced,
        };
        table.insert(key, route);
        self.len.store(table.len(), Ordering::Relaxed);
        Some(new)
    }

    /// A relayed request to learned route `method path` was answered: a stream clears its
    /// misses, anything else counts one. Returns the route when this answer made it forgotten.
    pub(crate) fn answered(&self, method: &Method, path: &str, stream: bool) -> Option<String> {
        if self.len() == 0 {
            return None;
        }
        let key = self.route_hash(method, path);
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let r = table.get(&key).filter(|r| r.matches(method, path))?;
            if stream {
                r.misses.store(0, Ordering::Relaxed);
                return None;
            }
            let misses = r.misses.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if misses < MISSES_TO_FORGET {
                return None;
            }
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the write lock: a stream may have cleared the misses meanwhile.
        let Entry::Occupied(e) = table.entry(key) else {
            return None;
        };
        let r = e.get();
        if !r.matches(method, path) || r.misses.load(Ordering::Relaxed) < MISSES_TO_FORGET {
            return None;
        }
        let (_, route) = e.remove_entry();
        self.len.store(table.len(), Ordering::Relaxed);
        Some(route.to_string())
    }

    /// The hash of a route: the method, then each segment's text, or only a tag for an id.
    /// Reads the path in place (no allocation).
    fn route_hash(&self, method: &Method, path: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        method.as_str().hash(&mut h);
        for seg in path.split('/') {
            if is_id_like(seg) {
                0u8.hash(&mut h);
            } else {
                1u8.hash(&mut h);
                seg.hash(&mut h);
            }
        }
        h.finish()
    }
}

impl Route {
    /// Whether `method path` is this route (compared segment by segment, in place).
    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method != method {
            return false;
        }
        let mut mine = self.segments.iter();
        for seg in path.split('/') {
            let same = match mine.next() {
                Some(Segment::Id) => is_id_like(seg),
                // A literal was not id-like when learned, so equal text is not one either.
                Some(Segment::Literal(lit)) => **lit == *seg,
                None => false,
            };
            if !same {
                return false;
            }
        }
        mine.next().is_none()
    }

    /// The longest `sse.paths` prefix covering every path of this route: the path up to its
    /// first id segment.
    fn prefix(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(lit) => {
                    if i > 0 {
                        out.push('/');
                    }
                    out.push_str(lit);
                }
                Segment::Id => {
                    out.push('/');
                    break;
                }
            }
        }
        out
    }
}

impl fmt::Display for Route {
    /// `POST /api/chat/{id}/stream`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.method)?;
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match seg {
                Segment::Literal(lit) => f.write_str(lit)?,
                Segment::Id => f.write_str("{id}")?,
            }
        }
        Ok(())
    }
}

impl Segment {
    fn of(seg: &str) -> Segment {
        if is_id_like(seg) {
            Segment::Id
        } else {
            Segment::Literal(seg.into())
        }
    }
}

/// Whether a path segment looks like an id: all digits, a UUID, or a run of at least
/// [`MIN_TOKEN_ID`] hex or base64url characters with a digit among them (hex ids, ULIDs,
/// nanoids). The digit keeps long words and slugs (`server-sent-events`) literal.
fn is_id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) || is_uuid(b) {
        return true;
    }
    b.len() >= MIN_TOKEN_ID
        && b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "8f14e45fceea167a5a36dedd4bea2543";

    #[test]
    fn id_like_segments() {
        for id in [
            "1",
            "42",
            "007",
            HEX,
            "550e8400-e29b-41d4-a716-446655440000",
            "ABCDEFAB-CDEF-ABCD-EFAB-CDEFABCDEFAB", // a UUID without a digit
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",           // ULID
            "V1StGXR8_Z5jdHi6B-myT",                // nanoid
            "0123456789abcdef",                     // exactly 16
        ] {
            assert!(is_id_like(id), "{id} is an id");
        }
        for word in [
            "",
            "api",
            "v1",
            "chat",
            "stream",
            "completions",
            "server-sent-events", // long, but no digit
            "0123456789abcde",    // 15: too short
            "8f14e45f.json",      // a dot is neither hex nor base64url
            "release-2024",       // a digit, but short
            "%7B1234567890abcdef%7D",
        ] {
            assert!(!is_id_like(word), "{word:?} is not an id");
        }
    }

    #[test]
    fn ids_in_a_path_make_one_route() {
        let t = LearnedRoutes::new();
        let post = Method::POST;
        let new = t.learn(&post, &format!("/api/chat/{HEX}/stream")).unwrap();
        assert_eq!(new.route, "POST /api/chat/{id}/stream");
        assert_eq!(new.prefix, "/api/chat/");
        assert!(t.contains(&post, "/api/chat/42/stream"));
        assert!(t.contains(
            &post,
            "/api/chat/550e8400-e29b-41d4-a716-446655440000/stream"
        ));
        assert_eq!(t.learn(&post, "/api/chat/7/stream"), None, "already known");
        assert_eq!(t.len(), 1);
        // Another method, a literal in the id's place, a different shape: other routes.
        assert!(!t.contains(&Method::GET, "/api/chat/42/stream"));
        assert!(!t.contains(&post, "/api/chat/hello/stream"));
        assert!(!t.contains(&post, "/api/chat/42"));
        assert!(!t.contains(&post, "/api/chat/42/stream/"));
        assert!(!t.contains(&post, "/api/chat/42/stream/more"));
    }

    #[test]
    fn a_path_without_ids_is_its_own_prefix() {
        let t = LearnedRoutes::new();
        let new = t.learn(&Method::POST, "/v1/chat/completions").unwrap();
        assert_eq!(new.route, "POST /v1/chat/completions");
        assert_eq!(new.prefix, "/v1/chat/completions");
        assert!(t.contains(&Method::POST, "/v1/chat/completions"));
        assert!(!t.contains(&Method::POST, "/v1/chat/completion"));
        let new = t.learn(&Method::GET, "/123/events").unwrap();
        assert_eq!(new.prefix, "/");
    }

    #[test]
    fn least_recently_used_route_goes_first() {
        let t = LearnedRoutes::with_capacity(3);
        let get = Method::GET;
        for p in ["/a", "/b", "/c"] {
            assert!(!t.learn(&get, p).unwrap().evicted);
        }
        // `/a` used again: `/b` is now the least recently used.
        assert!(t.contains(&get, "/a"));
        assert!(t.learn(&get, "/d").unwrap().evicted);
        assert_eq!(t.len(), 3);
        assert!(t.contains(&get, "/a"));
        assert!(!t.contains(&get, "/b"));
        assert!(t.contains(&get, "/c"));
        assert!(t.contains(&get, "/d"));
    }

    #[test]
    fn three_misses_in_a_row_forget_a_route() {
        let t = LearnedRoutes::new();
        let post = Method::POST;
        let path = "/v1/chat";
        t.learn(&post, path).unwrap();
        assert_eq!(t.answered(&post, path, false), None);
        assert_eq!(t.answered(&post, path, false), None);
        // A stream in between starts the count again.
        assert_eq!(t.answered(&post, path, true), None);
        assert_eq!(t.answered(&post, path, false), None);
        assert_eq!(t.answered(&post, path, false), None);
        assert!(t.contains(&post, path));
        assert_eq!(
            t.answered(&post, path, false).as_deref(),
            Some("POST /v1/chat")
        );
        assert!(!t.contains(&post, path));
        assert_eq!(t.len(), 0);
        // Answers to a route that is not there change nothing.
        assert_eq!(t.answered(&post, path, false), None);
        assert!(t.learn(&post, path).is_some(), "learned again from scratch");
    }

    #[test]
    fn bound_holds_under_ten_thousand_distinct_paths() {
        let t = LearnedRoutes::new();
        for i in 0..10_000 {
            // Words, not ids: each path is a route of its own.
            let word: String = format!("{i:05}")
                .bytes()
                .map(|d| (b'a' + (d - b'0')) as char)
                .collect();
            assert!(t.learn(&Method::POST, &format!("/p/{word}")).is_some());
            assert!(t.len() <= CAPACITY);
        }
        assert_eq!(t.len(), CAPACITY);
        assert_eq!(t.table.read().unwrap().len(), CAPACITY);
        // The newest are kept, the oldest gone.
        assert!(t.contains(&Method::POST, "/p/ajjjj"), "9999, the newest");
        assert!(!t.contains(&Method::POST, "/p/aaaaa"), "0, the oldest");
    }

    #[test]
    fn shared_between_threads() {
        let t = LearnedRoutes::new();
        std::thread::scope(|s| {
            for n in 0..4 {
                let t = &t;
                s.spawn(move || {
                    for i in 0..2_000 {
                        t.learn(&Method::GET, &format!("/t{n}/x{}", i % 50));
                        t.contains(&Method::GET, &format!("/t{n}/x{}", i % 7));
                        t.answered(&Method::GET, &format!("/t{n}/x{}", i % 3), i % 2 == 0);
                    }
                });
            }
        });
        assert!(t.len() <= CAPACITY);
        assert_eq!(t.len(), t.table.read().unwrap().len());
    }
}
