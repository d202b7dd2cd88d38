//! Fuzzes the PutMedia ack-stream parser: any bytes, split anywhere, must parse without
//! panicking, keep the pending line within the limit, and give the same acks however split.
//!
//! The parser module is compiled in directly (it depends only on serde, serde_json and
//! thiserror), so fuzz builds do not rebuild the whole agent.

#![no_main]

#[path = "../../agent/src/uploader/ack.rs"]
#[allow(dead_code)]
mod ack;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split points; the rest is the stream.
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut whole = ack::AckParser::new();
    let mut expected = whole.push(body);
    expected.extend(whole.finish());

    let mut split = ack::AckParser::new();
    let mut got = Vec::new();
    for chunk in body.chunks(step) {
        got.extend(split.push(chunk));
    }
    got.extend(split.finish());
    assert_eq!(normalise(expected), normalise(got), "the split changed the result");
});

/// How long an oversized line had grown when it was caught depends on the split; nothing else
/// may.
fn normalise(v: Vec<Result<ack::Ack, ack::AckError>>) -> Vec<Result<ack::Ack, ack::AckError>> {
    v.into_iter()
        .map(|r| match r {
            Err(ack::AckError::TooLong { .. }) => Err(ack::AckError::TooLong { len: 0 }),
            other => other,
        })
        .collect()
}
