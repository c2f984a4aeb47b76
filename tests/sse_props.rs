//! Property tests for the SSE framer (DESIGN §2): relaying an app's bytes
//! through `sse::Framer`, with any read splits and any heartbeat timings,
//! must not change what a spec-conforming client parses. The relay
//! simulation and the invariants are in `spec/relay.rs`, shared with the
//! framer's fuzz target (`tests/fuzz/`); this file generates the cases.

mod spec;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use spec::relay::{check, check_stamped, relay_with, Plan, Split, TOKEN};

const BOM: &[u8] = b"\xEF\xBB\xBF";

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
            6 => vec(any::<usize>(), 0..24).prop_map(Split::Random),
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
        check(&app, &plan).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Byte soup: anything at all, including lines split inside `data`,
    /// inside CRLF and inside the BOM.
    #[test]
    fn relay_preserves_byte_soup(app in byte_soup(), plan in plan()) {
        check(&app, &plan).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Huge lines: the memchr fast path across many chunks.
    #[test]
    fn relay_preserves_huge_lines(app in huge_stream(), plan in plan()) {
        check(&app, &plan).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// A stamping framer over structured streams (app ids of every shape).
    #[test]
    fn stamping_keeps_events_and_stamps_ids(app in app_stream(), plan in plan()) {
        check_stamped(&app, &plan).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A stamping framer over byte soup, split anywhere.
    #[test]
    fn stamping_survives_byte_soup(app in byte_soup(), plan in plan()) {
        check_stamped(&app, &plan).map_err(TestCaseError::fail)?;
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
