//! Hexadecimal, both ways: fingerprints, derived ids and test vectors are written in it.
//!
//! [`encode`] writes lowercase, the only case this protocol emits. [`decode`] also reads
//! uppercase, since people copy fingerprints from tools that print it, and refuses anything
//! else: no `0x` prefix, no sign, no whitespace. The error says where the input went wrong
//! but never repeats it, because what is decoded may be a secret.

/// Why text is not hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// An odd number of digits cannot be whole bytes.
    #[error("odd number of hex digits ({len})")]
    OddLength {
        /// The length of the input, in bytes.
        len: usize,
    },
    /// A byte that is not `0-9`, `a-f` or `A-F` (a non-ASCII character is reported at its
    /// first byte).
    #[error("not a hex digit at byte {at}")]
    InvalidDigit {
        /// Its offset in the input, in bytes.
        at: usize,
    },
}

/// `bytes` as lowercase hexadecimal, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The bytes that `text`, hexadecimal in either case, stands for.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(HexError::OddLength { len: digits.len() });
    }
    let digit = |at: usize| value(digits[at]).ok_or(HexError::InvalidDigit { at });
    (0..digits.len()).step_by(2).map(|at| Ok((digit(at)? << 4) | digit(at + 1)?)).collect()
}

fn value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        for (bytes, text) in [
            (&[][..], ""),
            (&[0x00][..], "00"),
            (&[0xff][..], "ff"),
            (&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][..], "0123456789abcdef"),
            (&[0xde, 0xad, 0xbe, 0xef][..], "deadbeef"),
        ] {
            assert_eq!(encode(bytes), text, "{bytes:?}");
            assert_eq!(decode(text).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn decodes_uppercase_and_mixed_case() {
        for (text, bytes) in [("FF", &[0xff][..]), ("DeadBeef", &[0xde, 0xad, 0xbe, 0xef][..]), ("aBcD", &[0xab, 0xcd][..])] {
            assert_eq!(decode(text).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn decodes_every_byte_it_encodes() {
        let all: Vec<u8> = (0..=u8::MAX).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn rejects_odd_length() {
        for (text, len) in [("0", 1), ("abc", 3), ("0123456789abcdef0", 17)] {
            assert_eq!(decode(text), Err(HexError::OddLength { len }), "{text}");
        }
    }

    #[test]
    fn rejects_non_hex_characters() {
        // `+a` is here because `u8::from_str_radix`, which hand-written decoders reach for,
        // reads it as 0x0a.
        for (text, at) in [("zz", 0), ("0g", 1), ("+a", 0), ("-a", 0), (" 0", 0), ("0x00", 1), ("00 0", 2), ("ab\0c", 2)] {
            assert_eq!(decode(text), Err(HexError::InvalidDigit { at }), "{text:?}");
        }
    }

    #[test]
    fn rejects_non_ascii() {
        // `é` is two bytes and `€` three, so these lengths are even and the digits are what fails.
        for (text, at) in [("é", 0), ("0é0", 1), ("00€0", 2), ("\u{ff10}0", 0)] {
            assert_eq!(decode(text), Err(HexError::InvalidDigit { at }), "{text:?}");
        }
    }
}
