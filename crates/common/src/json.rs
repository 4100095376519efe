//! JSON request bodies as their OpenAPI schemas describe them: an object
//! is only ever an object (serde's derive would also take a struct as an
//! array of its fields, so `[null, null]` passed for "no changes"), and a
//! whole number may be written `2` or `2.0` (JSON has one number type, and
//! an `integer` schema accepts both) but never `2.5`.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// `web::Json<T>` that takes only a JSON object, with the app's
/// `JsonConfig` (limit, content type, error handler) as usual.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for JsonObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Object<T>>::from_request(req, payload);
        Box::pin(async move { Ok(Self(json.await?.into_inner().0)) })
    }
}

/// `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// A non-negative whole number from `7` or `7.0`; `7.5`, `-1` and values
/// past `u64::MAX` are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeVisitor)
    }
}

struct WholeVisitor;

impl Visitor<'_> for WholeVisitor {
    type Value = Whole;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
        Ok(Whole(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
        u64::try_from(v)
            .map(Whole)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
        // 2^64 is the first f64 past u64::MAX; every whole f64 below it
        // converts exactly.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Whole(v as u64))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<u64, serde_json::Error> {
        serde_json::from_str::<Whole>(json).map(|w| w.0)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Changes {
        title: Option<String>,
        content: Option<String>,
    }

    #[test]
    fn a_struct_is_read_from_an_object_only() {
        let read = |json: &str| serde_json::from_str::<Object<Changes>>(json).map(|o| o.0);
        assert_eq!(
            read(r#"{"title": "t"}"#).unwrap(),
            Changes {
                title: Some("t".into()),
                content: None
            }
        );
        // What serde's derive alone takes: the fields as an array.
        assert!(serde_json::from_str::<Changes>("[null, null]").is_ok());
        for bad in ["[null, null]", "[]", "null", "\"t\"", r#"{"other": 1}"#] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_numbers_are_read_in_either_spelling() {
        assert_eq!(parse("7").unwrap(), 7);
        assert_eq!(parse("7.0").unwrap(), 7);
        assert_eq!(parse("7e2").unwrap(), 700);
        assert_eq!(parse("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn fractions_negatives_and_overflow_are_refused() {
        for bad in ["7.5", "-1", "-1.0", "1e20", "\"7\"", "null"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
