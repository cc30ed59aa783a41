//! Tool schemas in standard JSON Schema only.
//!
//! schemars annotates integers with its own formats (`uint64`, `uint16`, `int32`, `double`,
//! ...). They are not JSON Schema formats, so validating clients warn about every one (the
//! TypeScript SDK's Ajv once per field and call). The range is already carried by
//! `minimum`/`maximum`; the format is dropped.

use serde_json::{Map, Value};

/// The formats JSON Schema 2020-12 defines.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords of JSON Schema 2020-12 (core, applicator, validation, metadata, format,
/// content, unevaluated).
#[cfg(test)]
pub(crate) const STANDARD_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "unevaluatedItems",
    "unevaluatedProperties",
];

/// Drops non-standard `format`s everywhere in a schema object.
pub(crate) fn standardize_object(schema: &mut Map<String, Value>) {
    if schema
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
    {
        schema.remove("format");
    }
    for v in schema.values_mut() {
        standardize(v);
    }
}

fn standardize(v: &mut Value) {
    match v {
        Value::Object(o) => standardize_object(o),
        Value::Array(a) => a.iter_mut().for_each(standardize),
        _ => {}
    }
}

/// Every keyword and format in `schema` that JSON Schema does not define, as paths.
#[cfg(test)]
pub(crate) fn nonstandard(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(o) = schema else { return };
    for (k, v) in o {
        let here = format!("{path}/{k}");
        if !STANDARD_KEYWORDS.contains(&k.as_str()) {
            out.push(here.clone());
        }
        match k.as_str() {
            // Maps from names to schemas.
            "properties" | "$defs" | "patternProperties" | "dependentSchemas" => {
                if let Value::Object(m) = v {
                    for (name, s) in m {
                        nonstandard(s, &format!("{here}/{name}"), out);
                    }
                }
            }
            "format" if !v.as_str().is_some_and(|f| STANDARD_FORMATS.contains(&f)) => {
                out.push(format!("{here}={v}"));
            }
            // Values, not schemas.
            "enum" | "const" | "default" | "examples" | "required" => {}
            _ => match v {
                Value::Array(a) => {
                    for (i, s) in a.iter().enumerate() {
                        nonstandard(s, &format!("{here}/{i}"), out);
                    }
                }
                Value::Object(_) => nonstandard(v, &here, out),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_formats_are_dropped_and_standard_ones_kept() {
        let mut v = serde_json::json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "format": "uint64", "minimum": 0},
                "at": {"type": "string", "format": "date-time"},
                "list": {"type": "array", "items": {"type": "integer", "format": "uint16"}},
                "either": {"anyOf": [{"type": "number", "format": "double"}, {"type": "null"}]}
            }
        });
        let Value::Object(o) = &mut v else {
            unreachable!()
        };
        standardize_object(o);
        let mut bad = Vec::new();
        nonstandard(&v, "#", &mut bad);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(v["properties"]["n"]["minimum"], 0);
        assert_eq!(v["properties"]["at"]["format"], "date-time");
        assert!(v["properties"]["list"]["items"].get("format").is_none());
    }

    #[test]
    fn unknown_keywords_are_found() {
        let v = serde_json::json!({"type": "object", "nullable": true,
            "properties": {"x": {"type": "integer", "format": "int32"}}});
        let mut bad = Vec::new();
        nonstandard(&v, "#", &mut bad);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }
}
