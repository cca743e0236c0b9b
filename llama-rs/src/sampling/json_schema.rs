//! JSON Schema → GBNF grammar, so constrained output parses and validates.
//!
//! Supported: `type` (object, array, string, number, integer, boolean, null, and lists
//! of types), `properties` + `required` (property order kept, extra properties not
//! generated), `additionalProperties` (schema or `true`) for free-form objects, `items`,
//! `prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`, `enum`, `const`,
//! `anyOf`/`oneOf`, `$ref` to `#/$defs/...` or `#/definitions/...` (recursion allowed).
//! Keywords that cannot be enforced (`pattern`, `allOf`, `not`, `if`) are errors rather
//! than silently ignored; annotations (`title`, `description`, `format`, ...) are ignored.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// Whitespace the grammar allows between JSON tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonSpace {
    /// At most one space (the default): a small model cannot spend its answer on
    /// indentation (Gemma 3 270M writes a newline and 20 spaces between every token under
    /// the free form, and runs out of `max_tokens` before the JSON ends).
    #[default]
    Compact,
    /// Nothing, a space, or a newline and up to 20 spaces or tabs (pretty-printed JSON).
    Free,
}

impl JsonSpace {
    /// The `space` rule.
    fn rule(self) -> &'static str {
        match self {
            JsonSpace::Compact => "space ::= \" \"?\n",
            JsonSpace::Free => "space ::= | \" \" | \"\\n\" [ \\t]{0,20}\n",
        }
    }
}

const PRIMITIVES: &str = r#"char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
string ::= "\"" char* "\"" space
integer ::= "-"? ([0-9] | [1-9] [0-9]{0,15}) space
number ::= "-"? ([0-9] | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space
boolean ::= ("true" | "false") space
null ::= "null" space
value ::= object | array | string | number | boolean | null
object ::= "{" space (string ":" space value ("," space string ":" space value)*)? "}" space
array ::= "[" space (value ("," space value)*)? "]" space
"#;

/// Converts a JSON Schema into a GBNF grammar whose root is `root`.
///
/// ```
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": { "name": { "type": "string" }, "age": { "type": "integer" } },
///     "required": ["name"]
/// });
/// let gbnf = llama_rs::json_schema::to_gbnf(&schema)?;
/// assert!(gbnf.starts_with("root ::= "));
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn to_gbnf(schema: &Value) -> Result<String> {
    to_gbnf_with(schema, JsonSpace::default())
}

/// [`to_gbnf`] with the given whitespace between JSON tokens.
///
/// ```
/// use llama_rs::json_schema::{to_gbnf_with, JsonSpace};
/// let g = to_gbnf_with(&serde_json::json!({"type": "object"}), JsonSpace::Free)?;
/// assert!(g.contains(r#"space ::= | " " | "\n" [ \t]{0,20}"#));
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn to_gbnf_with(schema: &Value, space: JsonSpace) -> Result<String> {
    let mut c = Converter { root: schema, rules: BTreeMap::new(), refs: BTreeMap::new(), counter: 0, depth: 0 };
    let body = c.visit(schema, "root")?;
    let mut out = format!("root ::= {body}\n");
    for (name, rule) in &c.rules {
        out += &format!("{name} ::= {rule}\n");
    }
    out += space.rule();
    out += PRIMITIVES;
    Ok(out)
}

struct Converter<'a> {
    root: &'a Value,
    rules: BTreeMap<String, String>,
    /// `$ref` path → rule name (inserted before visiting, so recursion terminates).
    refs: BTreeMap<String, String>,
    counter: usize,
    /// Schemas being visited now (nesting plus `$ref` chains): bounded so a deep or
    /// long-chained schema is an error, not a stack overflow.
    depth: usize,
}

/// Deepest nesting of schemas (objects in arrays in ..., `$ref` chains) accepted.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Largest `minLength`/`maxLength`/`minItems`/`maxItems` that can be honoured (the
/// grammar's repetition bound; llama.cpp would silently make a larger one unbounded).
pub const MAX_SCHEMA_COUNT: u64 = super::gbnf_check::MAX_REPETITION;

fn count(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => {
            let n = v.as_u64().ok_or_else(|| bad(format!("`{key}` must be a non-negative integer, got {v}")))?;
            if n > MAX_SCHEMA_COUNT {
                return Err(bad(format!(
                    "`{key}` = {n} is above {MAX_SCHEMA_COUNT}, the largest bound a grammar can enforce"
                )));
            }
            Ok(Some(n))
        }
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::JsonSchema(msg.into())
}

/// A GBNF string literal for `s`.
fn literal(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o += "\\\"",
            '\\' => o += "\\\\",
            '\n' => o += "\\n",
            '\r' => o += "\\r",
            '\t' => o += "\\t",
            c if (c as u32) < 0x20 => o += &format!("\\x{:02X}", c as u32),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Converter<'_> {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        let clean: String =
            hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let clean = clean.trim_matches('-');
        format!("{}-{}", if clean.is_empty() { "r" } else { clean }, self.counter)
    }

    /// Adds a named rule and returns its name.
    fn rule(&mut self, hint: &str, body: String) -> String {
        let name = self.fresh(hint);
        self.rules.insert(name.clone(), body);
        name
    }

    fn resolve_ref(&mut self, r: &str) -> Result<String> {
        if let Some(name) = self.refs.get(r) {
            return Ok(name.clone());
        }
        let path = r.strip_prefix("#/").ok_or_else(|| bad(format!("only local $ref are supported, got {r:?}")))?;
        let mut target = self.root;
        for part in path.split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            target = target.get(&part).ok_or_else(|| bad(format!("$ref {r:?} does not resolve")))?;
        }
        let name = self.fresh(path.rsplit('/').next().unwrap_or("ref"));
        self.refs.insert(r.to_string(), name.clone());
        let body = self.visit(target, &name)?;
        self.rules.insert(name.clone(), body);
        Ok(name)
    }

    /// Returns a GBNF expression for `s`.
    fn visit(&mut self, s: &Value, hint: &str) -> Result<String> {
        if self.depth >= MAX_SCHEMA_DEPTH {
            return Err(bad(format!("schema nested (or `$ref`-chained) deeper than {MAX_SCHEMA_DEPTH}")));
        }
        self.depth += 1;
        let r = self.visit_inner(s, hint);
        self.depth -= 1;
        r
    }

    fn visit_inner(&mut self, s: &Value, hint: &str) -> Result<String> {
        let obj = match s {
            Value::Bool(true) => return Ok("value".into()),
            Value::Bool(false) => return Err(bad("schema `false` accepts nothing")),
            Value::Object(o) => o,
            _ => return Err(bad(format!("a schema must be an object or boolean, got {s}"))),
        };
        for k in ["pattern", "allOf", "not", "if", "patternProperties", "dependentSchemas"] {
            if obj.contains_key(k) {
                return Err(bad(format!("`{k}` is not supported in schemas turned into grammars")));
            }
        }
        if let Some(r) = obj.get("$ref") {
            let r = r.as_str().ok_or_else(|| bad("$ref must be a string"))?;
            return self.resolve_ref(r);
        }
        if let Some(c) = obj.get("const") {
            return Ok(format!("{} space", literal(&c.to_string())));
        }
        if let Some(e) = obj.get("enum") {
            let items = e.as_array().ok_or_else(|| bad("enum must be an array"))?;
            if items.is_empty() {
                return Err(bad("empty enum accepts nothing"));
            }
            let alts: Vec<String> = items.iter().map(|v| literal(&v.to_string())).collect();
            return Ok(format!("({}) space", alts.join(" | ")));
        }
        for k in ["anyOf", "oneOf"] {
            if let Some(list) = obj.get(k) {
                let list = list.as_array().ok_or_else(|| bad(format!("{k} must be an array")))?;
                if list.is_empty() {
                    return Err(bad(format!("empty {k}")));
                }
                let mut alts = Vec::new();
                for (i, sub) in list.iter().enumerate() {
                    let e = self.visit(sub, &format!("{hint}-{i}"))?;
                    alts.push(self.rule(&format!("{hint}-{i}"), e));
                }
                return Ok(format!("({})", alts.join(" | ")));
            }
        }
        match obj.get("type") {
            None => {
                if obj.contains_key("properties") {
                    self.object(obj, hint)
                } else if obj.contains_key("items") {
                    self.array(obj, hint)
                } else {
                    Ok("value".into())
                }
            }
            Some(Value::String(t)) => self.typed(t, obj, hint),
            Some(Value::Array(ts)) => {
                let mut alts = Vec::new();
                for t in ts {
                    let t = t.as_str().ok_or_else(|| bad("type list entries must be strings"))?;
                    let e = self.typed(t, obj, &format!("{hint}-{t}"))?;
                    alts.push(self.rule(&format!("{hint}-{t}"), e));
                }
                Ok(format!("({})", alts.join(" | ")))
            }
            Some(other) => Err(bad(format!("invalid type {other}"))),
        }
    }

    fn typed(&mut self, t: &str, obj: &serde_json::Map<String, Value>, hint: &str) -> Result<String> {
        Ok(match t {
            "object" => self.object(obj, hint)?,
            "array" => self.array(obj, hint)?,
            "string" => {
                let min = count(obj, "minLength")?;
                let max = count(obj, "maxLength")?;
                match (min, max) {
                    (None, None) => "string".into(),
                    (min, max) => {
                        let min = min.unwrap_or(0);
                        if let Some(max) = max {
                            if max < min {
                                return Err(bad("maxLength < minLength"));
                            }
                        }
                        let rep = match max {
                            Some(m) => format!("{{{min},{m}}}"),
                            None => format!("{{{min},}}"),
                        };
                        format!("\"\\\"\" char{rep} \"\\\"\" space")
                    }
                }
            }
            "integer" => "integer".into(),
            "number" => "number".into(),
            "boolean" => "boolean".into(),
            "null" => "null".into(),
            other => return Err(bad(format!("unknown type {other:?}"))),
        })
    }

    fn object(&mut self, obj: &serde_json::Map<String, Value>, hint: &str) -> Result<String> {
        let props = match obj.get("properties") {
            Some(Value::Object(p)) => p,
            Some(_) => return Err(bad("properties must be an object")),
            None => {
                return Ok(match obj.get("additionalProperties") {
                    Some(Value::Object(_)) => {
                        let v = self.visit(&obj["additionalProperties"], &format!("{hint}-value"))?;
                        let v = self.rule(&format!("{hint}-value"), v);
                        format!(
                            "\"{{\" space (string \":\" space {v} (\",\" space string \":\" space {v})*)? \"}}\" space"
                        )
                    }
                    _ => "object".into(),
                })
            }
        };
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for r in &required {
            if !props.contains_key(*r) {
                return Err(bad(format!("required property {r:?} is not in properties")));
            }
        }
        // kv_i for each property, in declaration order.
        let mut kvs = Vec::new();
        for (name, sub) in props {
            let v = self.visit(sub, &format!("{hint}-{name}"))?;
            let v = self.rule(&format!("{hint}-{name}"), v);
            let kv = self.rule(
                &format!("{hint}-{name}-kv"),
                format!("{} space \":\" space {v}", literal(&Value::String(name.clone()).to_string())),
            );
            kvs.push((kv, required.contains(&name.as_str())));
        }
        // after_i: the properties from i on, each preceded by a comma.
        let n = kvs.len();
        let mut after = vec![String::new(); n + 1];
        for i in (0..n).rev() {
            let (kv, req) = &kvs[i];
            let rest = &after[i + 1];
            let body = if *req { format!("\",\" space {kv} {rest}") } else { format!("(\",\" space {kv})? {rest}") };
            after[i] = self.rule(&format!("{hint}-after"), body.trim().to_string());
        }
        // first_i: the first present property is at some j >= i (optional ones before it
        // absent); empty only if all from i on are optional.
        let mut first = vec![String::new(); n + 1];
        let all_opt_from: Vec<bool> = (0..=n).map(|i| kvs[i..].iter().all(|(_, r)| !r)).collect();
        for i in (0..n).rev() {
            let (kv, req) = &kvs[i];
            let this = format!("{kv} {}", after[i + 1]);
            let body = if *req {
                this
            } else if i + 1 < n && !first[i + 1].is_empty() {
                format!("{this} | {}", first[i + 1])
            } else {
                this
            };
            first[i] = self.rule(&format!("{hint}-first"), body);
        }
        let inner = if n == 0 {
            String::new()
        } else if all_opt_from[0] {
            format!("({})?", first[0])
        } else {
            first[0].clone()
        };
        Ok(format!("\"{{\" space {inner} \"}}\" space"))
    }

    fn array(&mut self, obj: &serde_json::Map<String, Value>, hint: &str) -> Result<String> {
        if let Some(Value::Array(prefix)) = obj.get("prefixItems") {
            let mut parts = Vec::new();
            for (i, sub) in prefix.iter().enumerate() {
                let e = self.visit(sub, &format!("{hint}-{i}"))?;
                parts.push(self.rule(&format!("{hint}-{i}"), e));
            }
            return Ok(format!("\"[\" space {} \"]\" space", parts.join(" \",\" space ")));
        }
        let item = match obj.get("items") {
            Some(s) => {
                let e = self.visit(s, &format!("{hint}-item"))?;
                self.rule(&format!("{hint}-item"), e)
            }
            None => "value".into(),
        };
        let min = count(obj, "minItems")?.unwrap_or(0);
        let max = count(obj, "maxItems")?;
        if let Some(m) = max {
            if m < min {
                return Err(bad("maxItems < minItems"));
            }
            if m == 0 {
                return Ok("\"[\" space \"]\" space".into());
            }
        }
        let rest_rep = match (min, max) {
            (0, None) | (1, None) => "*".to_string(),
            (min, None) => format!("{{{},}}", min - 1),
            (min, Some(m)) => format!("{{{},{}}}", min.saturating_sub(1), m - 1),
        };
        let list = format!("{item} (\",\" space {item}){rest_rep}");
        Ok(if min == 0 {
            format!("\"[\" space ({list})? \"]\" space")
        } else {
            format!("\"[\" space {list} \"]\" space")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsupported_and_invalid_schemas_are_errors() {
        for s in [
            json!({"type": "string", "pattern": "^a$"}),
            json!({"allOf": []}),
            json!({"type": "nonsense"}),
            json!({"enum": []}),
            json!({"$ref": "#/$defs/missing"}),
            json!({"$ref": "http://x/y"}),
            json!({"type": "object", "properties": {"a": {}}, "required": ["b"]}),
            json!(false),
            json!(3),
            json!({"type": "array", "minItems": 3, "maxItems": 1}),
        ] {
            assert!(matches!(to_gbnf(&s), Err(Error::JsonSchema(_))), "{s}");
        }
    }

    #[test]
    fn literals_escape() {
        assert_eq!(literal("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
