//! The API's `Timestamp` type: on the wire (AWS JSON protocol) a number of seconds since the Unix
//! epoch, with the fraction carrying milliseconds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiTimestamp(pub jiff::Timestamp);

impl ApiTimestamp {
    pub fn from_millis(ms: i64) -> Option<ApiTimestamp> {
        jiff::Timestamp::from_millisecond(ms).ok().map(ApiTimestamp)
    }

    pub fn as_millis(self) -> i64 {
        self.0.as_millisecond()
    }
}

impl Serialize for ApiTimestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millisecond();
        if ms % 1000 == 0 {
            s.serialize_i64(ms / 1000)
        } else {
            s.serialize_f64(ms as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for ApiTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        let ms = (secs * 1000.0).round();
        if !ms.is_finite() || ms.abs() > 8.0e15 {
            return Err(serde::de::Error::custom(format!(
                "timestamp {secs} is out of range"
            )));
        }
        ApiTimestamp::from_millis(ms as i64)
            .ok_or_else(|| serde::de::Error::custom(format!("timestamp {secs} is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_epoch_seconds() {
        let t = ApiTimestamp::from_millis(1_700_000_000_250).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "1700000000.25");
        let whole = ApiTimestamp::from_millis(1_700_000_000_000).unwrap();
        assert_eq!(serde_json::to_string(&whole).unwrap(), "1700000000");
        let back: ApiTimestamp = serde_json::from_str("1700000000.25").unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn rejects_out_of_range_and_non_numbers() {
        assert!(serde_json::from_str::<ApiTimestamp>("1e300").is_err());
        assert!(serde_json::from_str::<ApiTimestamp>("\"2024-01-01\"").is_err());
    }
}
