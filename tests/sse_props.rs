//! Property tests for the SSE framer (DESIGN §2): relaying an app's bytes
//! through `sse::Framer`, with any read splits and any heartbeat timings,
//! must not change what a spec-conforming client parses.
//!
//! Each case simulates the relay without I/O: [opening block], then per
//! upstream chunk `framer.forward(chunk)`, and at each "tick" between chunks
//! a heartbeat and/or retry block if `framer.at_boundary()`; finally
//! `framer.finish()`. The output and the app's bytes both go through the
//! reference parser in `spec/` and must agree.

mod spec;

use std::ops::Range;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use spec::Item;
use sse_sidecar::sse::resume_id::ResumeId;
use sse_sidecar::sse::{comment_block, open_block, retry_block, Framer};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Per-step state checks reparse the output so far; skip them for huge
/// inputs to keep the suite fast.
const STEP_CHECK_MAX: usize = 4096;

/// How the relay handles one generated app stream.
#[derive(Debug, Clone)]
struct Plan {
    /// `(comment, padding, retry)` for `open_block`.
    opening: Option<(Option<&'static str>, usize, Option<u64>)>,
    split: Split,
    /// What happens at the gaps (before the first chunk, between chunks,
    /// after the last), cycled: bit 0 a heartbeat, bit 1 a retry block.
    ticks: Vec<u8>,
    heartbeat: &'static str,
    retry_ms: u64,
}

/// How the app's bytes arrive in upstream reads.
#[derive(Debug, Clone)]
enum Split {
    /// Cut points mapped onto the stream's length (repeats make empty
    /// chunks).
    Random(Vec<Index>),
    /// One byte per read.
    Bytewise,
    /// Exact cut positions (sorted).
    At(Vec<usize>),
}

/// What the simulated relay wrote downstream.
struct Relayed {
    output: Vec<u8>,
    /// Output ranges written by the sidecar (opening and injected blocks).
    injected: Vec<Range<usize>>,
    /// Retry values the sidecar wrote, in order.
    injected_retries: Vec<Vec<u8>>,
    /// Sum of `Forwarded::events`.
    events: u64,
    /// The sidecar wrote a block before any app byte went downstream.
    wrote_before_app: bool,
    /// A stamping framer's `event_ends`, as output offsets.
    event_ends: Vec<usize>,
}

fn split<'a>(app: &'a [u8], plan: &Plan) -> Vec<&'a [u8]> {
    let cuts = match &plan.split {
        Split::Bytewise => return app.chunks(1).collect(),
        Split::At(cuts) => cuts.clone(),
        Split::Random(indexes) => {
            let mut cuts: Vec<usize> = indexes.iter().map(|i| i.index(app.len() + 1)).collect();
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
    let parsed = spec::parse(output);
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

fn relay(app: &[u8], plan: &Plan) -> Relayed {
    relay_with(app, plan, None)
}

/// The simulated relay; `token`: a stamping framer (resumable stream).
fn relay_with(app: &[u8], plan: &Plan, token: Option<&str>) -> Relayed {
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
        Some(t) => Framer::stamping(open.is_some(), t.to_string()),
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
        r.event_ends
            .extend(framer.event_ends().iter().map(|end| at + end));
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
fn blocks_stand_alone(r: &Relayed, got: &spec::Parsed) -> Result<(), TestCaseError> {
    for block in &got.blocks {
        for inj in &r.injected {
            let disjoint = block.end <= inj.start || inj.end <= block.start;
            let inside = inj.start <= block.start && block.end <= inj.end;
            prop_assert!(
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
fn check(app: &[u8], plan: &Plan) -> Result<(), TestCaseError> {
    let r = relay(app, plan);
    let want = spec::parse(app);
    let got = spec::parse(&r.output);
    let injected_at = |pos: usize| r.injected.iter().any(|range| range.contains(&pos));

    let want_items: Vec<&Item> = want.items.iter().map(|(_, item)| item).collect();
    let got_app_items: Vec<&Item> = got
        .items
        .iter()
        .filter(|(pos, _)| !injected_at(*pos))
        .map(|(_, item)| item)
        .collect();
    prop_assert_eq!(got_app_items, want_items, "app events/retries changed");

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
    prop_assert_eq!(got_injected, want_injected, "injected blocks misparsed");

    prop_assert_eq!(
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
    prop_assert!(app_out == want_app, "app bytes were changed");
    Ok(())
}

/// A token no generated stream contains.
const TOKEN: &str = "Tk_-0123456789abcdefgh";

/// The id a stamping framer must give event `seq` whose app id is `app_id`.
fn stamped_id(seq: u64, app_id: &[u8]) -> Vec<u8> {
    let mut line = Vec::new();
    ResumeId::write_line(&mut line, TOKEN, seq, app_id);
    line[4..line.len() - 1].to_vec()
}

/// The invariant of a stamping framer (issue 15): a spec parser reads the
/// same events (type and data) and app retries from the output as from the
/// app's bytes; each event's id is ours, numbered from 1 and carrying the
/// app's own last event ID; injected blocks stay blocks of their own; and
/// taking our id lines out gives back the app's bytes.
fn check_stamped(app: &[u8], plan: &Plan) -> Result<(), TestCaseError> {
    let r = relay_with(app, plan, Some(TOKEN));
    let want = spec::parse(app);
    let got = spec::parse(&r.output);
    let injected_at = |pos: usize| r.injected.iter().any(|range| range.contains(&pos));
    let got_app: Vec<&Item> = got
        .items
        .iter()
        .filter(|(pos, _)| !injected_at(*pos))
        .map(|(_, item)| item)
        .collect();
    prop_assert_eq!(got_app.len(), want.items.len(), "items added or lost");
    let mut seq = 0;
    for ((_, w), g) in want.items.iter().zip(got_app) {
        match (w, g) {
            (Item::Event(w), Item::Event(g)) => {
                seq += 1;
                prop_assert_eq!(&g.event_type, &w.event_type, "event type changed");
                prop_assert_eq!(&g.data, &w.data, "data changed");
                prop_assert_eq!(&g.id, &stamped_id(seq, &w.id), "wrong id");
                let id = ResumeId::parse(&g.id).expect("our id parses");
                prop_assert_eq!((id.token, id.seq), (TOKEN, seq));
                prop_assert_eq!(id.app_id.unwrap_or_default(), &w.id[..]);
            }
            (w, g) => prop_assert_eq!(g, w, "retry changed"),
        }
    }
    prop_assert_eq!(r.events, seq, "Forwarded::events miscounted");
    // Each event end is where a client has that event and not the next one.
    prop_assert_eq!(r.event_ends.len() as u64, seq, "one end per event");
    let ends_to_check = if r.output.len() <= STEP_CHECK_MAX {
        r.event_ends.len()
    } else {
        0
    };
    for (i, end) in r.event_ends.iter().enumerate().take(ends_to_check) {
        let upto = spec::parse(&r.output[..*end]);
        prop_assert_eq!(
            upto.events().count(),
            i + 1,
            "event {} does not end at {}",
            i + 1,
            end
        );
        let before = spec::parse(&r.output[..*end - 1]);
        prop_assert_eq!(
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
    prop_assert_eq!(lines, seq, "one id line per event");
    let want_app = if r.wrote_before_app && app.starts_with(BOM) {
        &app[3..]
    } else {
        app
    };
    prop_assert!(unstamped == want_app, "app bytes were changed");
    Ok(())
}

#[test]
fn stamped_ids_by_hand() {
    let plan = Plan {
        opening: None,
        split: Split::At(vec![]),
        ticks: vec![0],
        heartbeat: "",
        retry_ms: 1,
    };
    let app = b"id: 7\ndata: a\n\ndata: b\r\n\r\nid\ndata: c\r\rid: x\x00\ndata: d\n\n";
    let r = relay_with(app, &plan, Some(TOKEN));
    let want = format!(
        "id: 7\ndata: a\nid: {TOKEN}.1.7\n\ndata: b\r\nid: {TOKEN}.2.7\n\r\nid\ndata: c\rid: {TOKEN}.3\n\rid: x\x00\ndata: d\nid: {TOKEN}.4\n\n"
    );
    assert_eq!(String::from_utf8_lossy(&r.output), want);
    check_stamped(app, &plan).unwrap();
}

// ---- generators ----

/// A field value: no CR/LF, but colons, spaces, NUL, invalid UTF-8 and BOM
/// bytes. (A lookup table, for generation speed; see `byte_soup`.)
fn value() -> impl Strategy<Value = Vec<u8>> {
    const ODD: &[u8] = b"\x00\xFF\xEF\xBB\xBF\xC3\xA9\x80";
    let byte = any::<u8>().prop_map(|b| match b {
        0..=199 => b' ' + b % 95,
        _ => ODD[usize::from(b) % ODD.len()],
    });
    vec(byte, 0..12)
}

fn prefixed(prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    value().prop_map(move |v| [prefix, &v].concat())
}

/// One line without its line end.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let near_miss = select(vec![
        &b"d"[..],
        b"da",
        b"dat",
        b"datax",
        b"data ",
        b"Data",
        b" data",
        b"dat a",
        b"datadata",
        b"\xEF\xBB\xBFdata",
        b"i",
        b"idd",
        b"Id",
        b" id",
    ]);
    let retry_value = prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string()),
        select(vec![
            "",
            " 5",
            "12a",
            "-1",
            "1.5",
            "99999999999999999999999"
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        8 => Just(Vec::new()),
        8 => prefixed(b"data: "),
        3 => prefixed(b"data:"),
        1 => Just(b"data".to_vec()),
        3 => (near_miss, proptest::option::of(value())).prop_map(|(name, v)| match v {
            Some(v) => [name, b":", &v].concat(),
            None => name.to_vec(),
        }),
        2 => prefixed(b"event: "),
        1 => prefixed(b"event:"),
        2 => prefixed(b"id: "),
        1 => select(vec![&b"id"[..], b"id:", b"id: \x00", b"event", b"retry"]).prop_map(<[u8]>::to_vec),
        2 => retry_value.prop_map(|v| format!("retry: {v}").into_bytes()),
        2 => prefixed(b":"),
        2 => prefixed(b": "),
        1 => prefixed(b"foo: "),
        1 => value(),
    ]
}

/// A structured app stream: optional BOM start, lines with LF/CRLF/CR
/// endings (per line or one style for the stream), optional unfinished tail.
fn app_stream() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        4 => Just(&b""[..]),
        3 => Just(BOM),
        1 => Just(&b"\xEF\xBB\xBF\xEF\xBB\xBF"[..]),
        1 => Just(&b"\xEF\xBB"[..]),
        1 => Just(&b"\xEF"[..]),
        1 => Just(&b"\xEF\xBB\xBF\r\n"[..]),
    ];
    (
        start,
        vec((line(), 0..3usize), 0..40),
        0..4usize,
        proptest::option::of(line()),
    )
        .prop_map(|(start, lines, style, tail)| {
            const EOL: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
            let mut out = start.to_vec();
            for (line, eol) in lines {
                out.extend_from_slice(&line);
                // style 0 mixes endings per line; 1..=3 use one for all.
                out.extend_from_slice(EOL[if style == 0 { eol } else { style - 1 }]);
            }
            if let Some(tail) = tail {
                out.extend_from_slice(&tail);
            }
            out
        })
}

/// Random bytes, heavy in the ones the framer cares about.
///
/// Built from plain `u8`s through a lookup table: a weighted `prop_oneof!`
/// per byte is ~50x slower to generate in debug builds.
fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
    const HEAVY: &[u8] = b"\n\n\n\n\r\r\r\r:::dddaaatttt  eventidry019x\xEF\xBB\xBF\x00\xFF";
    let byte = (any::<u8>(), any::<u8>()).prop_map(|(pick, raw)| {
        if pick < 224 {
            HEAVY[usize::from(pick) % HEAVY.len()]
        } else {
            raw
        }
    });
    (any::<bool>(), vec(byte, 0..300)).prop_map(
        |(bom, soup)| {
            if bom {
                [BOM, &soup].concat()
            } else {
                soup
            }
        },
    )
}

/// Small streams around one ~100 KiB line of some kind.
fn huge_stream() -> impl Strategy<Value = Vec<u8>> {
    let kind = select(vec![
        &b"data: "[..],
        b"data:",
        b": ",
        b"event: ",
        b"datax: ",
        b"",
    ]);
    let filler = select(vec![&b"x"[..], b"d:a t\x00\xFF\xEF", b"data: "]);
    let eol = select(vec![
        &b"\n"[..],
        b"\r\n",
        b"\r",
        b"\r\n\r\n",
        b"\n\n",
        b"\r\r",
    ]);
    (
        app_stream(),
        kind,
        filler,
        100 * 1024..101 * 1024usize,
        eol,
        app_stream(),
    )
        .prop_map(|(before, kind, filler, len, eol, after)| {
            let mut out = before;
            out.extend_from_slice(kind);
            out.extend(filler.iter().copied().cycle().take(len));
            out.extend_from_slice(eol);
            out.extend_from_slice(&after);
            out
        })
}

fn plan() -> impl Strategy<Value = Plan> {
    let opening = (
        proptest::option::of(select(vec!["ok", "", "hello: world"])),
        prop_oneof![2 => Just(0usize), 1 => 1usize..6, 1 => Just(2048usize)],
        proptest::option::of(0u64..10_000),
    );
    (
        proptest::option::of(opening),
        prop_oneof![
            6 => vec(any::<Index>(), 0..24).prop_map(Split::Random),
            1 => Just(Split::Bytewise),
        ],
        prop_oneof![
            3 => vec(0u8..4, 1..16),
            1 => vec(prop_oneof![6 => Just(0u8), 1 => 1u8..4], 1..16),
        ],
        select(vec!["", "hb", "x: y"]),
        0u64..100_000,
    )
        .prop_map(|(opening, split, ticks, heartbeat, retry_ms)| Plan {
            opening,
            split,
            ticks,
            heartbeat,
            retry_ms,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Structured streams: every field kind, near-miss `data` names, BOMs,
    /// all line-end styles, unfinished tails.
    #[test]
    fn relay_preserves_structured_streams(app in app_stream(), plan in plan()) {
        check(&app, &plan)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Byte soup: anything at all, including lines split inside `data`,
    /// inside CRLF and inside the BOM.
    #[test]
    fn relay_preserves_byte_soup(app in byte_soup(), plan in plan()) {
        check(&app, &plan)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Huge lines: the memchr fast path across many chunks.
    #[test]
    fn relay_preserves_huge_lines(app in huge_stream(), plan in plan()) {
        check(&app, &plan)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// A stamping framer over structured streams (app ids of every shape).
    #[test]
    fn stamping_keeps_events_and_stamps_ids(app in app_stream(), plan in plan()) {
        check_stamped(&app, &plan)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A stamping framer over byte soup, split anywhere.
    #[test]
    fn stamping_survives_byte_soup(app in byte_soup(), plan in plan()) {
        check_stamped(&app, &plan)?;
    }
}

/// Every split of tricky streams into three reads, with a heartbeat and a
/// retry block offered at every gap, with and without an opening block.
#[test]
fn every_three_way_split_of_tricky_streams() {
    let streams: [&[u8]; 5] = [
        b"\xEF\xBB\xBFdata: a\r\n\r\nevent: x\rdata\r\r",
        b"data:1\r\rdat\r\n\r\ndatax: 2\n\ndata:\n\r\n",
        b": c\r\n\r\nid: 1\x00\nretry: 7\rdata: \xFF\r\n\n",
        b"\xEF\xBBdata: 1\n\n",
        b"\xEF\xBB\xBF",
    ];
    for app in streams {
        for opening in [None, Some((Some("ok"), 0, Some(5)))] {
            for ticks in [vec![3], vec![0, 1]] {
                for i in 0..=app.len() {
                    for j in i..=app.len() {
                        let plan = Plan {
                            opening,
                            split: Split::At(vec![i, j]),
                            ticks: ticks.clone(),
                            heartbeat: "",
                            retry_ms: 1,
                        };
                        if let Err(e) = check(app, &plan) {
                            panic!("{e} for {app:?} with {plan:?}");
                        }
                        if let Err(e) = check_stamped(app, &plan) {
                            panic!("stamping: {e} for {app:?} with {plan:?}");
                        }
                    }
                }
            }
        }
    }
}
