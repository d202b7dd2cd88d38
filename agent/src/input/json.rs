//! JSON parsing that refuses a key repeated in an object. serde_json keeps the last of
//! repeated keys, so `{"StreamName":"a","StreamName":"b"}` would quietly configure stream `b`
//! while the operator reading the file sees `a`. A first pass walks the document without
//! building anything and fails on the first repeated key (naming it, with its line and
//! column); the second is the ordinary parse.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use super::quote;

/// `serde_json::from_str`, refusing repeated keys.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str::<UniqueKeys>(text)?;
    serde_json::from_str(text)
}

/// `serde_json::from_slice`, refusing repeated keys.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice::<UniqueKeys>(bytes)?;
    serde_json::from_slice(bytes)
}

/// Any JSON value whose objects each have distinct keys.
struct UniqueKeys;

impl<'de> de::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    quote(&key)
                )));
            }
            map.next_value::<UniqueKeys>()?;
            seen.insert(key);
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn refuses_a_repeated_key_at_any_depth() {
        let e = from_str::<Value>(r#"{"StreamName":"a","StreamName":"b"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"duplicate key "StreamName" at line 1 column 30"#
        );
        let e = from_slice::<Value>(br#"{"a":[{"x":1},{"y":{"z":1,"z":2}}]}"#).unwrap_err();
        assert!(e.to_string().starts_with(r#"duplicate key "z""#), "{e}");
        // The same key in sibling objects, or escaped differently but equal, is no repeat and
        // a repeat respectively.
        assert!(from_str::<Value>(r#"{"a":{"k":1},"b":{"k":2}}"#).is_ok());
        assert!(from_str::<Value>(r#"{"k":1,"\u006b":2}"#).is_err());
        assert_eq!(
            from_str::<Value>(r#"[1, -0, 2.5, "s", null, true, {}]"#).unwrap(),
            serde_json::json!([1, -0.0, 2.5, "s", null, true, {}])
        );
        assert!(from_str::<Value>("{").is_err());
    }
}
