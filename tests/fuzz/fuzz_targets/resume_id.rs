//! Resume ids (`ResumeId::parse`, `ResumeId::write_line`): parsing any bytes
//! never panics; what parses is in the one form `write_line` writes, so
//! writing it back gives the same bytes; and what `write_line` writes (any
//! token of the alphabet, any seq, any app id the framer would keep) parses
//! back to the same token, seq and app id, and a spec parser reads it as
//! that event's id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_sidecar::sse::resume_id::{ResumeId, TOKEN_LEN};
use sse_sidecar_fuzz::spec;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fuzz_target!(|data: &[u8]| {
    // parse, then write: the same bytes.
    if let Some(id) = ResumeId::parse(data) {
        assert_eq!(id.token.len(), TOKEN_LEN);
        assert!(
            id.app_id.is_none_or(|a| !a.is_empty()),
            "Some(empty) app id"
        );
        let mut line = Vec::new();
        ResumeId::write_line(&mut line, id.token, id.seq, id.app_id.unwrap_or_default());
        assert_eq!(line, [b"id: ", data, b"\n"].concat(), "{id:?}");
    }

    // write, then parse: the same id. Token from the first 22 bytes, seq from the next 8,
    // the app id from the rest less what the framer never keeps (NUL, CR, LF).
    let Some((raw_token, rest)) = data.split_first_chunk::<TOKEN_LEN>() else {
        return;
    };
    let Some((raw_seq, rest)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let token: String = raw_token
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 64)]))
        .collect();
    let seq = u64::from_le_bytes(*raw_seq);
    let app_id: Vec<u8> = rest
        .iter()
        .copied()
        .filter(|b| !matches!(b, 0 | b'\r' | b'\n'))
        .collect();
    let mut line = Vec::new();
    ResumeId::write_line(&mut line, &token, seq, &app_id);
    let value = line
        .strip_prefix(b"id: ")
        .and_then(|l| l.strip_suffix(b"\n"))
        .expect("id: <value>\\n");
    let id = ResumeId::parse(value).expect("a written id parses");
    assert_eq!((id.token, id.seq), (token.as_str(), seq));
    assert_eq!(id.app_id, (!app_id.is_empty()).then_some(&app_id[..]));

    // A client keeps the whole value as the event's id.
    let stream = [&line[..], b"data\n\n"].concat();
    let parsed = spec::parse(&stream);
    let ids: Vec<&[u8]> = parsed.events().map(|e| &e.id[..]).collect();
    assert_eq!(ids, [value]);
});
