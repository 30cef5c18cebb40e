//! Fitting a converted resource to the R4 definitions, element by element, with the shapes the
//! validator compiles from the R4 schema: cardinality (single ↔ one-item array), JSON kinds
//! (a number where R4 has a string and back), codes R4 lists — and every element with no R4 home
//! moved into a cross-version extension on its parent, so nothing is lost.

use serde_json::{Map, Number, Value};

use super::ops::Ctx;
use super::values::extensions_for;
use crate::validate::{ShapeKind, Validator};

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Fit a resource's top level (and everything under it).
pub(crate) fn fit_resource(map: &mut Map<String, Value>, r4_type: &str, ctx: &mut Ctx) {
    let mut path = String::with_capacity(64);
    path.push_str(ctx.source_type);
    fit_object(map, r4_type, &mut path, ctx);
}

/// What became of one value.
enum Fitted {
    Keep(Value),
    /// No R4 home: keep it in an extension.
    Away(Value),
    Empty,
}

/// Fit an object of R4 type `type_name`. `path` is the source path of the object (a buffer
/// shared by the whole walk: each level appends its key and takes it off again, so no path is
/// built unless something moves into an extension).
fn fit_object(map: &mut Map<String, Value>, type_name: &str, path: &mut String, ctx: &mut Ctx) {
    let validator = Validator::r4();
    let Some(type_id) = validator.type_id(type_name) else { return };
    let mut away: Vec<(String, Value)> = Vec::new();
    // Taken whole and put back key by key: the order is kept and nothing is searched for.
    let source = std::mem::replace(map, Map::with_capacity(map.len()));
    for (key, value) in source {
        if key == "resourceType" || key == "extension" || key == "modifierExtension" {
            map.insert(key, value);
            continue;
        }
        if is_empty(&value) {
            ctx.report.dropped_empty += 1;
            continue;
        }
        let parent_len = path.len();
        path.push('.');
        path.push_str(key.trim_start_matches('_'));
        let Some(shape) = validator.shape_in(type_id, &key) else {
            away.push((path.clone(), value));
            path.truncate(parent_len);
            continue;
        };
        let element = key.starts_with('_');
        let fit_one = |item: Value, path: &mut String, ctx: &mut Ctx| {
            if !element {
                return fit_item(item, shape.kind, shape.complex, shape.codes, path, ctx);
            }
            // A primitive's extension sibling: an Element (id, extension), or null in arrays.
            match item {
                Value::Object(mut o) => {
                    fit_object(&mut o, "Element", path, ctx);
                    if o.is_empty() {
                        Fitted::Empty
                    } else {
                        Fitted::Keep(Value::Object(o))
                    }
                }
                Value::Null => Fitted::Keep(Value::Null),
                other => Fitted::Away(other),
            }
        };
        let mut settle = |fitted: Fitted, path: &String, ctx: &mut Ctx| match fitted {
            Fitted::Keep(v) => Some(v),
            Fitted::Away(v) => {
                away.push((path.clone(), v));
                None
            }
            Fitted::Empty => {
                ctx.report.dropped_empty += 1;
                None
            }
        };
        match (shape.array, value) {
            (true, value) => {
                let items = match value {
                    Value::Array(items) => items,
                    single => vec![single],
                };
                let mut kept = Vec::with_capacity(items.len());
                for item in items {
                    let fitted = fit_one(item, path, ctx);
                    kept.extend(settle(fitted, path, ctx));
                }
                if !kept.is_empty() {
                    map.insert(key, Value::Array(kept));
                }
            }
            (false, Value::Array(items)) if items.len() != 1 => away.push((path.clone(), Value::Array(items))),
            (false, value) => {
                let single = match value {
                    Value::Array(mut items) => items.pop().unwrap_or(Value::Null),
                    single => single,
                };
                let fitted = fit_one(single, path, ctx);
                if let Some(v) = settle(fitted, path, ctx) {
                    map.insert(key, v);
                }
            }
        }
        path.truncate(parent_len);
    }
    if away.is_empty() {
        return;
    }
    if validator.shape(type_name, "extension").is_none() {
        // Only a Bundle's own top level cannot hold extensions.
        for (p, _) in away {
            ctx.report.refused.push(format!("{p}: no R4 element and nowhere to keep it"));
        }
        return;
    }
    let mut extensions: Vec<Value> = match map.remove("extension") {
        Some(Value::Array(e)) => e,
        _ => Vec::new(),
    };
    for (p, v) in away {
        ctx.report.kept(&p);
        extensions.extend(extensions_for(&ctx.version.extension_url(&p), v));
    }
    if !extensions.is_empty() {
        map.insert("extension".into(), Value::Array(extensions));
    }
}

fn fit_item(
    item: Value,
    kind: ShapeKind,
    complex: Option<&str>,
    codes: Option<&[Box<str>]>,
    path: &mut String,
    ctx: &mut Ctx,
) -> Fitted {
    if is_empty(&item) {
        return Fitted::Empty;
    }
    match kind {
        ShapeKind::Complex => match (item, complex) {
            (Value::Object(mut o), Some(t)) => {
                fit_object(&mut o, t, path, ctx);
                if o.is_empty() {
                    Fitted::Empty
                } else {
                    Fitted::Keep(Value::Object(o))
                }
            }
            (other, _) => Fitted::Away(other),
        },
        ShapeKind::Code => match &item {
            Value::String(s) if codes.is_none_or(|c| c.iter().any(|k| &**k == s.as_str())) => Fitted::Keep(item),
            _ => Fitted::Away(item),
        },
        ShapeKind::Resource => match item {
            Value::Object(_) => Fitted::Keep(item),
            other => Fitted::Away(other),
        },
        ShapeKind::Primitive(p) => fit_primitive(item, p),
    }
}

fn fit_primitive(item: Value, prim: &str) -> Fitted {
    let numeric = matches!(prim, "integer" | "positiveInt" | "unsignedInt" | "decimal");
    match (item, prim) {
        (Value::Bool(b), "boolean") => Fitted::Keep(Value::Bool(b)),
        (Value::String(s), "boolean") => match s.as_str() {
            "true" => Fitted::Keep(Value::Bool(true)),
            "false" => Fitted::Keep(Value::Bool(false)),
            _ => Fitted::Away(Value::String(s)),
        },
        (Value::Number(n), _) if numeric => {
            let integer = prim != "decimal";
            if integer && !n.is_i64() && !n.is_u64() {
                return Fitted::Away(Value::Number(n));
            }
            let v = n.as_i64().unwrap_or(1);
            match prim {
                "positiveInt" if v < 1 => Fitted::Away(Value::Number(n)),
                "unsignedInt" if v < 0 => Fitted::Away(Value::Number(n)),
                _ => Fitted::Keep(Value::Number(n)),
            }
        }
        (Value::String(s), _) if numeric => match s.trim().parse::<i64>() {
            Ok(i) if prim != "decimal" => Fitted::Keep(Value::Number(Number::from(i))),
            _ => match serde_json::from_str::<Number>(s.trim()) {
                Ok(n) if prim == "decimal" => Fitted::Keep(Value::Number(n)),
                _ => Fitted::Away(Value::String(s)),
            },
        },
        (Value::String(s), _) => Fitted::Keep(Value::String(s)),
        // A number or boolean where R4 has a string-like primitive: its text.
        (Value::Number(n), "string" | "code" | "id" | "uri") => Fitted::Keep(Value::String(n.to_string())),
        (Value::Bool(b), "string" | "code") => Fitted::Keep(Value::String(b.to_string())),
        (other, _) => Fitted::Away(other),
    }
}
