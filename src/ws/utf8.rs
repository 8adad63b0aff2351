//! Incremental UTF-8 validation of text messages (RFC 6455 §5.6, §8.1).
//!
//! A text message may be split anywhere, also inside a code point, across
//! fragments and across reads. The validator fails as soon as the bytes
//! seen so far cannot start valid UTF-8 and tolerates an incomplete code
//! point at the end of the input until the message is complete. It uses the
//! standard library's validator: `Utf8Error::error_len()` tells an invalid
//! sequence (`Some`) from one cut short by the end of the input (`None`).

/// UTF-8 is not valid: the connection fails with 1007.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// Validates a stream of bytes, piece by piece.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    /// The start of a code point cut by the end of the previous piece.
    partial: [u8; 4],
    /// How many bytes of `partial` are in use (0 to 3).
    partial_len: usize,
}

impl Utf8Validator {
    pub(crate) fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Forgets any incomplete code point: ready for a new message.
    pub(crate) fn reset(&mut self) {
        self.partial_len = 0;
    }

    /// Validates the next piece. `last` says the message ends with it, so
    /// an incomplete code point at its end is an error too.
    pub(crate) fn feed(&mut self, input: &[u8], last: bool) -> Result<(), InvalidUtf8> {
        let rest = if self.partial_len == 0 {
            input
        } else {
            // The pending lead byte was valid (or it would have failed), so
            // this is the length of its code point: 2, 3 or 4.
            let needed = match self.partial[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let take = (needed - self.partial_len).min(input.len());
            let have = self.partial_len + take;
            self.partial[self.partial_len..have].copy_from_slice(&input[..take]);
            match std::str::from_utf8(&self.partial[..have]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: `input` was used up.
                    self.partial_len = have;
                    return if last { Err(InvalidUtf8) } else { Ok(()) };
                }
            }
            &input[take..]
        };
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() || last => Err(InvalidUtf8),
            Err(e) => {
                let tail = &rest[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
                Ok(())
            }
        }
    }

    /// No incomplete code point is pending.
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.partial_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns the index of the piece that failed.
    fn first_failure(pieces: &[&[u8]]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        for (i, piece) in pieces.iter().enumerate() {
            if v.feed(piece, i + 1 == pieces.len()).is_err() {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn utf8_valid_text_split_at_every_byte_passes() {
        let text = "κόσμε ✓ 𝄞 ascii".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(
                first_failure(&[&text[..cut], &text[cut..]]),
                None,
                "cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(first_failure(&bytes), None);
    }

    #[test]
    fn utf8_incomplete_code_point_at_a_piece_end_waits_for_more() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xf0, 0x9d], false), Ok(()));
        assert!(!v.is_complete());
        assert_eq!(v.feed(&[0x84], false), Ok(()));
        assert_eq!(v.feed(&[0x9e, b'a'], true), Ok(()));
        assert!(v.is_complete());
    }

    #[test]
    fn utf8_incomplete_code_point_at_the_message_end_fails() {
        assert_eq!(first_failure(&[b"ab", &[0xe2, 0x9c]]), Some(1));
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2], false).unwrap();
        assert_eq!(v.feed(&[], true), Err(InvalidUtf8));
    }

    #[test]
    fn utf8_invalid_sequence_fails_in_the_piece_where_it_becomes_certain() {
        // 0xed 0xa0 0x80 is a UTF-16 surrogate: invalid once 0xa0 is seen.
        assert_eq!(
            first_failure(&[b"ok", &[0xed], &[0xa0, 0x80], b"more"]),
            Some(2)
        );
        // A lone continuation byte is invalid at once.
        assert_eq!(first_failure(&[b"ok", &[0x80], b"more"]), Some(1));
        // 0xf5 can never start a code point.
        assert_eq!(first_failure(&[&[0xf5], b"more"]), Some(0));
        // Over-long encoding of '/' is invalid at its second byte.
        assert_eq!(first_failure(&[&[0xe0], &[0x80], &[0xaf]]), Some(1));
        // Beyond U+10FFFF.
        assert_eq!(first_failure(&[&[0xf4], &[0x90], &[0x80, 0x80]]), Some(1));
    }

    #[test]
    fn utf8_invalid_byte_after_a_valid_prefix_in_one_piece_fails() {
        assert_eq!(first_failure(&[b"hello\xffworld", b"x"]), Some(0));
    }

    #[test]
    fn utf8_pending_code_point_completed_then_invalid_tail_fails() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xc3], false).unwrap();
        assert_eq!(v.feed(&[0xa9, 0xff], false), Err(InvalidUtf8));
    }

    #[test]
    fn utf8_reset_forgets_a_pending_code_point() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x9c], false).unwrap();
        v.reset();
        assert_eq!(v.feed(b"plain", true), Ok(()));
    }
}
