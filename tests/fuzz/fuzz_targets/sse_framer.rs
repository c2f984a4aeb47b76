//! The SSE framer (`sse::Framer`, plain and stamping) against the WHATWG
//! reference parser: the invariants of `tests/sse_props.rs`, checked by the
//! same code (`tests/spec/relay.rs`). Whatever the app's bytes, the read
//! splits and where heartbeats, retry hints and an opening block go, a
//! client parses the same events and retries from the output as from the
//! app's bytes, injected blocks stay blocks of their own, the app's bytes
//! pass unchanged (but a leading BOM after a prefix, and our id lines), and
//! a stamping framer gives every event the id `<token>.<seq>[.<app id>]`.
//!
//! Input: three control bytes, then the app's stream.
//! - byte 0: bits 0-1 the opening block, bits 2-3 the heartbeat text;
//! - byte 1: what happens at each gap between reads, two bits a gap
//!   (bit 0 a heartbeat, bit 1 a retry block), cycled;
//! - byte 2: the read splits (`sse_sidecar_fuzz::cuts`; 0xff: bytewise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_sidecar_fuzz::cuts;
use sse_sidecar_fuzz::spec::relay::{check, check_stamped, Plan, Split, TOKEN};

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, ticks, seed], app)) = data.split_first_chunk::<3>() else {
        return;
    };
    let opening = match flags & 3 {
        0 => None,
        1 => Some((Some("ok"), 0, Some(5))),
        2 => Some((None, 3, None)),
        _ => Some((Some("hello: world"), 0, None)),
    };
    let plan = Plan {
        opening,
        split: match cuts(seed, app.len()) {
            Some(cuts) => Split::At(cuts),
            None => Split::Bytewise,
        },
        ticks: (0..4).map(|i| (ticks >> (2 * i)) & 3).collect(),
        heartbeat: ["", "hb", "x: y", "data"][usize::from(flags >> 2 & 3)],
        retry_ms: u64::from(seed) * 37,
    };
    if let Err(e) = check(app, &plan) {
        panic!("{e}\napp {:?}\n{plan:?}", String::from_utf8_lossy(app));
    }
    // The check finds our id lines by the token: an app that writes it itself is out of scope.
    let has_token = app.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
    if has_token {
        return;
    }
    if let Err(e) = check_stamped(app, &plan) {
        panic!(
            "stamping: {e}\napp {:?}\n{plan:?}",
            String::from_utf8_lossy(app)
        );
    }
});
