//! The relay simulation and the invariants the framer's property tests
//! (`tests/sse_props.rs`) and its fuzz target (`tests/fuzz/`) both check:
//! relaying an app's bytes through `sse::Framer`, with any read splits and
//! any heartbeat timings, must not change what a spec-conforming client
//! parses (DESIGN §2).
//!
//! Each case simulates the relay without I/O: [opening block], then per
//! upstream chunk `framer.forward(chunk)`, and at each "tick" between chunks
//! a heartbeat and/or retry block if `framer.at_boundary()`; finally
//! `framer.finish()`. The output and the app's bytes both go through the
//! reference parser ([`super::parse`]) and must agree. A broken invariant is
//! an `Err` with what broke; a framer state that disagrees with the output
//! so far panics at once.

use std::ops::Range;

use super::{parse, Item, Parsed};
use bytes::Bytes;
use sse_sidecar::sse::resume_id::{ResumeId, Token};
use sse_sidecar::sse::{comment_block, open_block, retry_block, Framer};

/// `Err(message)` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `Err` with both sides unless they are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        ensure_eq!($left, $right, "{} != {}", stringify!($left), stringify!($right))
    };
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!("{}: {:?} != {:?}", format!($($msg)+), left, right));
        }
    }};
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Per-step state checks reparse the output so far; skip them for huge
/// inputs to keep the suite fast.
const STEP_CHECK_MAX: usize = 4096;

/// How the relay handles one generated app stream.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `(comment, padding, retry)` for `open_block`.
    pub opening: Option<(Option<&'static str>, usize, Option<u64>)>,
    pub split: Split,
    /// What happens at the gaps (before the first chunk, between chunks,
    /// after the last), cycled: bit 0 a heartbeat, bit 1 a retry block.
    pub ticks: Vec<u8>,
    pub heartbeat: &'static str,
    pub retry_ms: u64,
}

/// How the app's bytes arrive in upstream reads.
#[derive(Debug, Clone)]
pub enum Split {
    /// Cut points, each taken modulo the stream's length + 1 (repeats make
    /// empty chunks).
    Random(Vec<usize>),
    /// One byte per read.
    Bytewise,
    /// Exact cut positions (sorted).
    At(Vec<usize>),
}

/// What the simulated relay wrote downstream.
pub struct Relayed {
    pub output: Vec<u8>,
    /// Output ranges written by the sidecar (opening and injected blocks).
    pub injected: Vec<Range<usize>>,
    /// Retry values the sidecar wrote, in order.
    pub injected_retries: Vec<Vec<u8>>,
    /// Sum of `Forwarded::events`.
    pub events: u64,
    /// The sidecar wrote a block before any app byte went downstream.
    pub wrote_before_app: bool,
    /// A stamping framer's `event_ends`, as output offsets.
    pub event_ends: Vec<usize>,
}

fn split<'a>(app: &'a [u8], plan: &Plan) -> Vec<&'a [u8]> {
    let cuts = match &plan.split {
        Split::Bytewise => return app.chunks(1).collect(),
        Split::At(cuts) => cuts.clone(),
        Split::Random(indexes) => {
            let mut cuts: Vec<usize> = indexes.iter().map(|i| i % (app.len() + 1)).collect();
            cuts.sort_unstable();
            cuts
        }
    };
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for cut in cuts {
        chunks.push(&app[last..cut]);
        last = cut;
    }
    chunks.push(&app[last..]);
    chunks
}

/// The framer's view of the stream must match the parser's view of what
/// actually went downstream.
fn check_state(framer: &Framer, output: &[u8]) {
    let parsed = parse(output);
    assert_eq!(
        framer.at_boundary(),
        parsed.at_boundary,
        "at_boundary() disagrees with the output so far: {:?}",
        String::from_utf8_lossy(output)
    );
    assert_eq!(
        framer.mid_event(),
        parsed.mid_event,
        "mid_event() disagrees with the output so far: {:?}",
        String::from_utf8_lossy(output)
    );
}

pub fn relay(app: &[u8], plan: &Plan) -> Relayed {
    relay_with(app, plan, None)
}

/// The simulated relay; `token`: a stamping framer (resumable stream).
pub fn relay_with(app: &[u8], plan: &Plan, token: Option<&str>) -> Relayed {
    let step_checks = app.len() <= STEP_CHECK_MAX;
    let mut r = Relayed {
        output: Vec::new(),
        injected: Vec::new(),
        injected_retries: Vec::new(),
        events: 0,
        wrote_before_app: false,
        event_ends: Vec::new(),
    };
    let open = plan
        .opening
        .and_then(|(comment, padding, retry)| open_block(comment, padding, retry));
    let mut framer = match token {
        Some(t) => Framer::stamping(
            open.is_some(),
            Token::new(t).expect("a token of TOKEN_LEN characters"),
        ),
        None => Framer::new(open.is_some()),
    };
    if let Some(block) = &open {
        r.output.extend_from_slice(block);
        r.injected.push(0..block.len());
        r.wrote_before_app = true;
        if let Some((_, _, Some(ms))) = plan.opening {
            r.injected_retries.push(ms.to_string().into_bytes());
        }
    }
    let heartbeat = comment_block(plan.heartbeat);
    let retry = retry_block(plan.retry_ms);
    let chunks = split(app, plan);
    let mut app_bytes_out = false;

    for gap in 0..=chunks.len() {
        let tick = plan.ticks[gap % plan.ticks.len()];
        for (bit, block) in [(1, &heartbeat), (2, &retry)] {
            if tick & bit == 0 || !framer.at_boundary() {
                continue;
            }
            let start = r.output.len();
            r.output.extend_from_slice(block);
            r.injected.push(start..r.output.len());
            if bit == 2 {
                r.injected_retries
                    .push(plan.retry_ms.to_string().into_bytes());
            }
            framer.injected();
            r.wrote_before_app |= !app_bytes_out;
            if step_checks {
                check_state(&framer, &r.output);
            }
        }
        let Some(chunk) = chunks.get(gap) else {
            break;
        };
        let chunk = Bytes::copy_from_slice(chunk);
        let fwd = framer.forward(chunk.clone());
        // Zero-copy: anything not longer than the chunk must be a slice of it
        // (only released BOM bytes and id lines make the output longer, and
        // copied).
        if token.is_none() && !fwd.bytes.is_empty() && fwd.bytes.len() <= chunk.len() {
            let within = chunk.as_ptr_range();
            let got = fwd.bytes.as_ptr_range();
            assert!(
                within.start <= got.start && got.end <= within.end,
                "forwarded bytes were copied"
            );
        }
        app_bytes_out |= !fwd.bytes.is_empty();
        let at = r.output.len();
        // The seqs of the events ended here: the next ones, in order.
        let next = r.event_ends.len() as u64 + 1;
        assert!(
            fwd.ends
                .iter()
                .map(|&(seq, _)| seq)
                .eq(next..next + fwd.ends.len() as u64),
            "event ends numbered {:?} after {} events",
            fwd.ends,
            next - 1
        );
        r.event_ends
            .extend(fwd.ends.iter().map(|&(_, end)| at + end));
        r.output.extend_from_slice(&fwd.bytes);
        r.events += u64::from(fwd.events);
        if step_checks {
            check_state(&framer, &r.output);
        }
    }
    r.output.extend_from_slice(&framer.finish());
    r
}

/// Every block the sidecar injected is a block of its own in the output.
fn blocks_stand_alone(r: &Relayed, got: &Parsed) -> Result<(), String> {
    for block in &got.blocks {
        for inj in &r.injected {
            let disjoint = block.end <= inj.start || inj.end <= block.start;
            let inside = inj.start <= block.start && block.end <= inj.end;
            ensure!(
                disjoint || inside,
                "injected block {:?} merged with block {:?} in {:?}",
                inj,
                block,
                String::from_utf8_lossy(&r.output)
            );
        }
    }
    Ok(())
}

/// The output less the blocks the sidecar injected.
fn without_injected(r: &Relayed) -> Vec<u8> {
    let mut app_out = Vec::with_capacity(r.output.len());
    let mut last = 0;
    for inj in &r.injected {
        app_out.extend_from_slice(&r.output[last..inj.start]);
        last = inj.end;
    }
    app_out.extend_from_slice(&r.output[last..]);
    app_out
}

/// The invariant: same events and app retries, events counted, injected
/// blocks are blocks of their own, app bytes untouched (BOM case aside).
pub fn check(app: &[u8], plan: &Plan) -> Result<(), String> {
    let r = relay(app, plan);
    let want = parse(app);
    let got = parse(&r.output);
    let injected_at = |pos: usize| r.injected.iter().any(|range| range.contains(&pos));

    let want_items: Vec<&Item> = want.items.iter().map(|(_, item)| item).collect();
    let got_app_items: Vec<&Item> = got
        .items
        .iter()
        .filter(|(pos, _)| !injected_at(*pos))
        .map(|(_, item)| item)
        .collect();
    ensure_eq!(got_app_items, want_items, "app events/retries changed");

    let got_injected: Vec<Item> = got
        .items
        .iter()
        .filter(|(pos, _)| injected_at(*pos))
        .map(|(_, item)| item.clone())
        .collect();
    let want_injected: Vec<Item> = r
        .injected_retries
        .iter()
        .cloned()
        .map(Item::Retry)
        .collect();
    ensure_eq!(got_injected, want_injected, "injected blocks misparsed");

    ensure_eq!(
        r.events,
        want.events().count() as u64,
        "Forwarded::events miscounted"
    );

    blocks_stand_alone(&r, &got)?;
    let app_out = without_injected(&r);
    let want_app = if r.wrote_before_app && app.starts_with(BOM) {
        &app[3..]
    } else {
        app
    };
    ensure!(app_out == want_app, "app bytes were changed");
    Ok(())
}

/// A token no generated stream contains.
pub const TOKEN: &str = "Tk_-0123456789abcdefgh";

/// The id a stamping framer must give event `seq` whose app id is `app_id`.
pub fn stamped_id(seq: u64, app_id: &[u8]) -> Vec<u8> {
    let mut line = Vec::new();
    ResumeId::write_line(&mut line, TOKEN, seq, app_id);
    line[4..line.len() - 1].to_vec()
}

/// The invariant of a stamping framer (issue 15): a spec parser reads the
/// same events (type and data) and app retries from the output as from the
/// app's bytes; each event's id is ours, numbered from 1 and carrying the
/// app's own last event ID; injected blocks stay blocks of their own; and
/// taking our id lines out gives back the app's bytes.
pub fn check_stamped(app: &[u8], plan: &Plan) -> Result<(), String> {
    let r = relay_with(app, plan, Some(TOKEN));
    let want = parse(app);
    let got = parse(&r.output);
    let injected_at = |pos: usize| r.injected.iter().any(|range| range.contains(&pos));
    let got_app: Vec<&Item> = got
        .items
        .iter()
        .filter(|(pos, _)| !injected_at(*pos))
        .map(|(_, item)| item)
        .collect();
    ensure_eq!(got_app.len(), want.items.len(), "items added or lost");
    let mut seq = 0;
    for ((_, w), g) in want.items.iter().zip(got_app) {
        match (w, g) {
            (Item::Event(w), Item::Event(g)) => {
                seq += 1;
                ensure_eq!(&g.event_type, &w.event_type, "event type changed");
                ensure_eq!(&g.data, &w.data, "data changed");
                ensure_eq!(&g.id, &stamped_id(seq, &w.id), "wrong id");
                let Some(id) = ResumeId::parse(&g.id) else {
                    return Err(format!(
                        "our id {:?} does not parse",
                        String::from_utf8_lossy(&g.id)
                    ));
                };
                ensure_eq!((id.token, id.seq), (TOKEN, seq));
                ensure_eq!(id.app_id.unwrap_or_default(), &w.id[..]);
            }
            (w, g) => ensure_eq!(g, w, "retry changed"),
        }
    }
    ensure_eq!(r.events, seq, "Forwarded::events miscounted");
    // Each event end is where a client has that event and not the next one.
    ensure_eq!(r.event_ends.len() as u64, seq, "one end per event");
    let ends_to_check = if r.output.len() <= STEP_CHECK_MAX {
        r.event_ends.len()
    } else {
        0
    };
    for (i, end) in r.event_ends.iter().enumerate().take(ends_to_check) {
        let upto = parse(&r.output[..*end]);
        ensure_eq!(
            upto.events().count(),
            i + 1,
            "event {} does not end at {}",
            i + 1,
            end
        );
        let before = parse(&r.output[..*end - 1]);
        ensure_eq!(
            before.events().count(),
            i,
            "event {} ends before {}",
            i + 1,
            end
        );
    }
    blocks_stand_alone(&r, &got)?;
    // The app's bytes: the output less injected blocks and our id lines.
    let app_out = without_injected(&r);
    let marker = format!("id: {TOKEN}.");
    let mut rest = &app_out[..];
    let mut unstamped = Vec::with_capacity(app_out.len());
    let mut lines = 0;
    while let Some(at) = rest
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
    {
        unstamped.extend_from_slice(&rest[..at]);
        let end = at
            + rest[at..]
                .iter()
                .position(|b| *b == b'\n')
                .expect("id line ends")
            + 1;
        rest = &rest[end..];
        lines += 1;
    }
    unstamped.extend_from_slice(rest);
    ensure_eq!(lines, seq, "one id line per event");
    let want_app = if r.wrote_before_app && app.starts_with(BOM) {
        &app[3..]
    } else {
        app
    };
    ensure!(unstamped == want_app, "app bytes were changed");
    Ok(())
}
