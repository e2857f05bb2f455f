//! The keys a user may write in several forms: `loss.class_weights` ("balanced" or a
//! list) and `freeze_up_to` ("all", an index, or a gradual schedule).

use super::*;

impl Serialize for ClassWeights {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClassWeights::Balanced => s.serialize_str("balanced"),
            ClassWeights::Given(w) => w.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClassWeights;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"balanced\" or a list of weights, one per class")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClassWeights, E> {
                if v == "balanced" {
                    Ok(ClassWeights::Balanced)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ClassWeights, A::Error> {
                let mut w = vec![];
                while let Some(x) = seq.next_element::<f64>()? {
                    w.push(x);
                }
                Ok(ClassWeights::Given(w))
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! count_or_keyword {
    ($name:ident, $keyword:literal, $all:ident, $expecting:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            #[default]
            $all,
            Count(usize),
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $name::$all => s.serialize_str($keyword),
                    $name::Count(n) => s.serialize_u64(*n as u64),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        if v == $keyword {
                            Ok($name::$all)
                        } else {
                            Err(E::invalid_value(de::Unexpected::Str(v), &self))
                        }
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        usize::try_from(v)
                            .map($name::Count)
                            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        match u64::try_from(v) {
                            Ok(v) => self.visit_u64(v),
                            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                        }
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

count_or_keyword!(Classes, "auto", Auto, "\"auto\" or a number of classes");

impl Serialize for FreezeUpTo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FreezeUpTo::All => s.serialize_str("all"),
            FreezeUpTo::Count(n) => s.serialize_u64(*n as u64),
            FreezeUpTo::Gradual(g) => g.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FreezeUpTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FreezeUpTo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\", a backbone layer index, or { from = A, to = B, every = E }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FreezeUpTo, E> {
                if v == "all" { Ok(FreezeUpTo::All) } else { Err(E::invalid_value(de::Unexpected::Str(v), &self)) }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FreezeUpTo, E> {
                usize::try_from(v)
                    .map(FreezeUpTo::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FreezeUpTo, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FreezeUpTo, A::Error> {
                GradualFreeze::deserialize(de::value::MapAccessDeserializer::new(map)).map(FreezeUpTo::Gradual)
            }
        }
        d.deserialize_any(V)
    }
}
