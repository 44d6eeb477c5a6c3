//! Hostile inputs for the property tests of every decoder of network or disk
//! input, in this crate and the others (with the `testing` feature): arbitrary
//! bytes and text, and mutations of valid encodings (bits flipped, cut short,
//! extended, bytes overwritten or spliced in), which get past the first checks
//! that random bytes rarely pass (magics, lengths, signatures' framing).
//!
//! Each property is written once and declared with [`hostile_tests!`](crate::hostile_tests),
//! which runs it at [`CASES`] cases in the normal test run and at [`AT_SCALE`]
//! cases in an ignored test: `cargo test --workspace --lib -- --ignored at_scale`.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Cases per property in the normal test run: small, since every crate has
/// several such properties and the whole run must stay quick.
pub const CASES: u32 = 2000;
/// Cases per property in the ignored `at_scale` tests.
pub const AT_SCALE: u32 = 100_000;

/// Runs `property` on `cases` values of `strategy`; panics with the smallest
/// failing input proptest finds (a panic of the decoder counts as a failure).
pub fn check<S: Strategy>(cases: u32, strategy: S, property: impl Fn(S::Value) -> TestCaseResult) {
    let config = Config {
        cases,
        // The failing input is in the panic message; regression files would
        // land in whichever crate's source tree the test ran from.
        failure_persistence: None,
        ..Config::default()
    };
    if let Err(failure) = TestRunner::new(config).run(&strategy, property) {
        panic!("{failure}");
    }
}

/// Declares each `name: strategy => property;` twice: as a test at [`CASES`]
/// cases, and as an ignored test of the same name at [`AT_SCALE`] cases in a
/// module `at_scale`, so one filter selects all of those. Use it once per
/// test module; the strategies and properties are evaluated in that module.
#[macro_export]
macro_rules! hostile_tests {
    ($($name:ident: $strategy:expr => $property:expr;)+) => {
        $(
            #[test]
            fn $name() {
                $crate::hostile::check($crate::hostile::CASES, $strategy, $property);
            }
        )+

        mod at_scale {
            use super::*;
            $(
                #[test]
                #[ignore = "100 000 cases: cargo test --workspace --lib -- --ignored at_scale"]
                fn $name() {
                    $crate::hostile::check($crate::hostile::AT_SCALE, $strategy, $property);
                }
            )+
        }
    };
}

/// Arbitrary bytes, at most `max_len` of them.
pub fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(any::<u8>(), 0..=max_len)
}

/// Arbitrary text: any Unicode, printable ASCII, or arbitrary bytes read as
/// UTF-8 (invalid sequences replaced).
pub fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        bytes(80).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// `valid` damaged one to three times: bits flipped, cut short, extended,
/// bytes overwritten (with length and varint boundaries among others) or
/// spliced in.
pub fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(mutation(), 1..=3).prop_map(move |mutations| {
        let mut bytes = valid.clone();
        for mutation in &mutations {
            mutation.apply(&mut bytes);
        }
        bytes
    })
}

/// Either arbitrary bytes (up to twice `valid`'s length and then some) or
/// `valid` mutated; mostly the latter, which reach deeper into a decoder.
pub fn bytes_or_mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> + Clone {
    let max_len = valid.len() * 2 + 64;
    prop_oneof![1 => bytes(max_len), 3 => mutated(valid)]
}

/// [`mutated`] for text: the damaged bytes read as UTF-8, invalid sequences
/// replaced (a `&str` decoder never sees invalid UTF-8).
pub fn mutated_text(valid: String) -> impl Strategy<Value = String> + Clone {
    mutated(valid.into_bytes()).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Either arbitrary [`text`] or `valid` mutated.
pub fn text_or_mutated(valid: String) -> impl Strategy<Value = String> + Clone {
    prop_oneof![1 => text(), 3 => mutated_text(valid)]
}

/// One way to damage an encoding. Positions are proportions of the input's
/// length at the time, so every mutation applies to inputs of any length.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flips the bits of a non-zero mask in one byte.
    Flip(Index, u8),
    /// Cuts the input short.
    Truncate(Index),
    /// Appends bytes.
    Extend(Vec<u8>),
    /// Overwrites bytes from a position, with values that decoders often
    /// treat specially (0, 0x7f, 0x80, 0xff: length and varint boundaries).
    Overwrite(Index, Vec<u8>),
    /// Replaces up to `.1` bytes at a position with others: a removal, an
    /// insertion, or both.
    Splice(Index, usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> + Clone {
    let special = prop_oneof![any::<u8>(), Just(0), Just(0x7f), Just(0x80), Just(0xff)];
    prop_oneof![
        3 => (any::<Index>(), 1..=u8::MAX).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => bytes(32).prop_map(Mutation::Extend),
        2 => (any::<Index>(), vec(special, 1..=8)).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        2 => (any::<Index>(), 0..=16usize, bytes(16))
            .prop_map(|(at, remove, insert)| Mutation::Splice(at, remove, insert)),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        // `Index::index` takes a non-zero length: positions among the bytes
        // use `len`, positions between them (cuts, splices) `len + 1`.
        let len = bytes.len();
        match self {
            Mutation::Flip(at, mask) if len > 0 => bytes[at.index(len)] ^= mask,
            Mutation::Overwrite(at, with) if len > 0 => {
                let start = at.index(len);
                let end = (start + with.len()).min(len);
                bytes[start..end].copy_from_slice(&with[..end - start]);
            }
            // Nothing to change in an empty input: damage it by adding a byte.
            Mutation::Flip(..) | Mutation::Overwrite(..) => bytes.push(0),
            Mutation::Truncate(at) => bytes.truncate(at.index(len + 1)),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Splice(at, remove, insert) => {
                let start = at.index(len + 1);
                let end = (start + remove).min(len);
                bytes.splice(start..end, insert.iter().copied());
            }
        }
    }
}
