//! The ids a resumable stream's events carry (issue 15): `<token>.<seq>` or
//! `<token>.<seq>.<app id>`.
//!
//! - `token`: 22 base64url characters, 128 random bits per stream, so an id
//!   cannot be guessed from another;
//! - `seq`: the event's number in its stream, from 1, in decimal;
//! - `app id`: the app's own last event ID at that event (the spec's "last
//!   event ID buffer", which persists across events), when it is not empty.
//!
//! A request carrying such a `Last-Event-ID` can be matched to its stream by
//! the token and to an event by the seq, and the app's own id can be handed
//! to the app even after the sidecar has forgotten the stream. An id that
//! does not parse is not one of ours and passes to the app unchanged.

use bytes::BufMut;

/// Length of a token: 16 random bytes in base64url without padding.
pub const TOKEN_LEN: usize = 22;

/// A stream's token, held inline (a stamping framer writes it into every
/// event's id, and reads it from where its other per-event state is).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// `token` as a [`Token`]; `None` unless it is [`TOKEN_LEN`] base64url
    /// characters.
    pub fn new(token: &str) -> Option<Token> {
        let bytes: [u8; TOKEN_LEN] = token.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|&b| is_token_byte(b))
            .then_some(Token(bytes))
    }

    /// Its characters, as the framer writes them (no UTF-8 check per event).
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ever made of ASCII (see `Token::new` and `new_token`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for Token {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.as_str())
    }
}

/// A parsed `Last-Event-ID` of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeId<'a> {
    pub token: &'a str,
    pub seq: u64,
    /// The app's own last event ID at that event; `None` when it was empty.
    pub app_id: Option<&'a [u8]>,
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl<'a> ResumeId<'a> {
    /// Parses a `Last-Event-ID` value; `None` when it is not one of ours.
    pub fn parse(value: &'a [u8]) -> Option<ResumeId<'a>> {
        let (token, rest) = value.split_at_checked(TOKEN_LEN)?;
        if !token.iter().all(|&b| is_token_byte(b)) {
            return None;
        }
        let rest = rest.strip_prefix(b".")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (seq, rest) = rest.split_at(digits);
        // Digits only, no leading zero, at most u64.
        if seq.is_empty() || seq.len() > 20 || (seq[0] == b'0' && seq.len() > 1) {
            return None;
        }
        let seq: u64 = std::str::from_utf8(seq).ok()?.parse().ok()?;
        let app_id = match rest {
            [] => None,
            [b'.', app @ ..] if !app.is_empty() => Some(app),
            _ => return None,
        };
        Some(ResumeId {
            token: std::str::from_utf8(token).ok()?,
            seq,
            app_id,
        })
    }

    /// Appends `id: <id>\n` for event `seq` of the stream `token`, whose app
    /// last event ID is `app_id` (empty: none): [`ResumeId::line_len`] bytes.
    /// `app_id` must hold no NUL, CR or LF (the framer only keeps ids the spec
    /// would keep).
    pub fn write_line<B: BufMut>(
        out: &mut B,
        token: &(impl AsRef<[u8]> + ?Sized),
        seq: u64,
        app_id: &[u8],
    ) {
        out.put_slice(b"id: ");
        out.put_slice(token.as_ref());
        out.put_u8(b'.');
        // Without the formatting machinery: one per event.
        out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        if !app_id.is_empty() {
            out.put_u8(b'.');
            out.put_slice(app_id);
        }
        out.put_u8(b'\n');
    }

    /// The length of the line [`ResumeId::write_line`] writes.
    pub fn line_len(token: &(impl AsRef<[u8]> + ?Sized), seq: u64, app_id: &[u8]) -> usize {
        let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
        let app = if app_id.is_empty() {
            0
        } else {
            1 + app_id.len()
        };
        b"id: ".len() + token.as_ref().len() + 1 + digits + app + 1
    }
}

/// A fresh stream token: 128 bits from the operating system's generator.
pub fn new_token() -> Result<Token, getrandom::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    Ok(Token(base64url(&raw)))
}

/// base64url without padding (RFC 4648 §5).
fn base64url(raw: &[u8; 16]) -> [u8; TOKEN_LEN] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = [0u8; TOKEN_LEN];
    let mut len = 0;
    for &b in raw {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out[len] = ALPHABET[((bits >> n) & 63) as usize];
            len += 1;
        }
    }
    // 128 bits: 21 whole sextets and 2 bits left.
    out[len] = ALPHABET[((bits << (6 - n)) & 63) as usize];
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn tokens_are_22_url_safe_characters_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.bytes().all(is_token_byte), "{a}");
        assert_ne!(a, b);
        assert_eq!(&base64url(&[0xff; 16]), b"_____________________w");
        assert_eq!(&base64url(&[0; 16]), T.as_bytes());
        assert_eq!(Token::new(T).map(|t| t.to_string()).as_deref(), Some(T));
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAA.",
            "AAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(Token::new(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn written_ids_parse_back() {
        for app in [&b""[..], b"42", b"a.b.c", b" x:y ", b"\xff\x01"] {
            for seq in [0, 1, 7, 9, 10, 99, 100, 12345, u64::MAX] {
                let mut line = Vec::new();
                ResumeId::write_line(&mut line, T, seq, app);
                let value = line
                    .strip_prefix(b"id: ")
                    .unwrap()
                    .strip_suffix(b"\n")
                    .unwrap();
                let digits = format!("{T}.{seq}");
                assert!(value.starts_with(digits.as_bytes()), "{value:?}");
                assert_eq!(line.len(), ResumeId::line_len(T, seq, app));
                let id = ResumeId::parse(value).unwrap();
                assert_eq!((id.token, id.seq), (T, seq));
                assert_eq!(id.app_id, (!app.is_empty()).then_some(app));
            }
        }
    }

    #[test]
    fn other_ids_are_not_ours() {
        for value in [
            &b""[..],
            b"42",
            b"AAAAAAAAAAAAAAAAAAAAA.1",
            b"AAAAAAAAAAAAAAAAAAAAAAA.1",
            b"AAAAAAAAAAAAAAAAAAAAA+.1",
            b"AAAAAAAAAAAAAAAAAAAAAA.",
            b"AAAAAAAAAAAAAAAAAAAAAA.01",
            b"AAAAAAAAAAAAAAAAAAAAAA.1x",
            b"AAAAAAAAAAAAAAAAAAAAAA.1.",
            b"AAAAAAAAAAAAAAAAAAAAAA.99999999999999999999999",
        ] {
            assert_eq!(
                ResumeId::parse(value),
                None,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
