//! The subset of FHIRPath that R4 search parameter expressions use.
//!
//! Supported: member paths with FHIR JSON semantics (arrays flatten, `value` matches a choice
//! element such as `valueQuantity`), a leading type name (`Observation.code`, `Resource.meta`),
//! `[n]`, `|`, `=`, `!=`, `and`, `or`, `is`/`as` (operators and functions), and the functions
//! `where`, `exists`, `empty`, `not`, `first`, `resolve`, `ofType`, `extension`.
//!
//! Expressions are parsed once (see [`parse`]) and evaluated many times over `serde_json::Value`s
//! without copying them: results borrow from the resource and from the expression (literals).

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `$this`, and the implicit input of a path's first step.
    This,
    Literal(Value),
    /// `on.a.b.c`: member steps, kept together so evaluation walks them without intermediate
    /// collections. When `on` is [`Expr::This`] and the first step is a type name (`Observation`,
    /// `Resource`) that the input resource has, that step selects the resource itself.
    Path {
        on: Box<Expr>,
        steps: Vec<String>,
    },
    /// `on[index]`
    Index {
        on: Box<Expr>,
        index: usize,
    },
    Call {
        on: Box<Expr>,
        func: Func,
    },
    /// `on is T` / `on as T` (and the function forms `is(T)`, `as(T)`, `ofType(T)`).
    Type {
        on: Box<Expr>,
        op: TypeOp,
        type_name: String,
    },
    Union(Box<Expr>, Box<Expr>),
    Equals {
        left: Box<Expr>,
        right: Box<Expr>,
        negate: bool,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    Where(Box<Expr>),
    Exists,
    Empty,
    Not,
    First,
    /// Cannot load the target; yields the Reference itself typed as the referenced resource type
    /// (from its `reference` string), which is all that `resolve() is Patient` needs.
    Resolve,
    /// `extension('url')`: the extensions with that url.
    Extension(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeOp {
    /// Boolean type test.
    Is,
    /// Filter to items of the type (`as` in search expressions is used on collections, so it
    /// behaves like `ofType`).
    As,
}

/// One result of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item<'a> {
    pub node: &'a Value,
    /// The FHIR type when the JSON alone does not tell it: the suffix of a choice element key
    /// (`valueQuantity` -> `Quantity`, `onsetDateTime` -> `dateTime`) or, after `resolve()`, the
    /// referenced resource type. `None` for ordinary elements.
    pub type_name: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath parse error at {position}: {message}")]
pub struct ParseError {
    /// Byte offset in the source.
    pub position: usize,
    pub message: String,
}

/// Evaluate `expr` with `resource` as its input (and `%resource`).
pub fn evaluate<'a>(expr: &'a Expr, resource: &'a Value) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    evaluate_into(expr, resource, &mut out);
    out
}

/// [`evaluate`] appending to `out`, so a caller evaluating many expressions can reuse one buffer.
pub fn evaluate_into<'a>(expr: &'a Expr, resource: &'a Value, out: &mut Vec<Item<'a>>) {
    eval_into(expr, &[Item { node: resource, type_name: None }], out);
}

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

fn boolean<'a>(b: bool) -> Item<'a> {
    Item { node: if b { &TRUE } else { &FALSE }, type_name: None }
}

fn eval<'a>(expr: &'a Expr, focus: &[Item<'a>]) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    eval_into(expr, focus, &mut out);
    out
}

/// Evaluate `on` and pass its results to `f`, avoiding a copy when `on` is the focus itself
/// (by far the most common case: the first step of every path).
fn with_input<'a, R>(on: &'a Expr, focus: &[Item<'a>], f: impl FnOnce(&[Item<'a>]) -> R) -> R {
    match on {
        Expr::This => f(focus),
        _ => f(&eval(on, focus)),
    }
}

fn eval_into<'a>(expr: &'a Expr, focus: &[Item<'a>], out: &mut Vec<Item<'a>>) {
    match expr {
        Expr::This => out.extend_from_slice(focus),
        Expr::Literal(value) => out.push(Item { node: value, type_name: None }),
        Expr::Path { on, steps } => {
            let from_focus = matches!(**on, Expr::This);
            with_input(on, focus, |input| {
                for item in input {
                    let steps = match steps.split_first() {
                        Some((first, rest))
                            if from_focus && is_type_name(first) && is_resource_of_type(item.node, first) =>
                        {
                            rest
                        }
                        _ => steps.as_slice(),
                    };
                    walk(*item, steps, out);
                }
            });
        }
        Expr::Index { on, index } => {
            with_input(on, focus, |input| out.extend(input.get(*index).copied()));
        }
        Expr::Call { on, func } => with_input(on, focus, |input| call(func, input, out)),
        Expr::Type { on, op, type_name } => with_input(on, focus, |input| match op {
            TypeOp::As => out.extend(input.iter().filter(|item| is_type(item, type_name))),
            TypeOp::Is => {
                if let [item] = input {
                    out.push(boolean(is_type(item, type_name)));
                }
            }
        }),
        Expr::Union(left, right) => {
            let start = out.len();
            eval_into(left, focus, out);
            for item in eval(right, focus) {
                // Union removes duplicates; identity of the JSON node is what matters here.
                if !out[start..].iter().any(|seen| std::ptr::eq(seen.node, item.node)) {
                    out.push(item);
                }
            }
        }
        Expr::Equals { left, right, negate } => {
            let (left, right) = (eval(left, focus), eval(right, focus));
            if !left.is_empty() && !right.is_empty() {
                let equal =
                    left.len() == right.len() && left.iter().zip(&right).all(|(l, r)| values_equal(l.node, r.node));
                out.push(boolean(equal != *negate));
            }
        }
        Expr::And(left, right) => {
            let result = match (truth(&eval(left, focus)), truth(&eval(right, focus))) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            out.extend(result.map(boolean));
        }
        Expr::Or(left, right) => {
            let result = match (truth(&eval(left, focus)), truth(&eval(right, focus))) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
            out.extend(result.map(boolean));
        }
    }
}

fn call<'a>(func: &'a Func, input: &[Item<'a>], out: &mut Vec<Item<'a>>) {
    match func {
        Func::Where(criteria) => {
            for item in input {
                if truth(&eval(criteria, std::slice::from_ref(item))) == Some(true) {
                    out.push(*item);
                }
            }
        }
        Func::Exists => out.push(boolean(!input.is_empty())),
        Func::Empty => out.push(boolean(input.is_empty())),
        Func::Not => {
            if let Some(b) = truth(input) {
                out.push(boolean(!b));
            }
        }
        Func::First => out.extend(input.first().copied()),
        Func::Resolve => {
            for item in input {
                let reference = match item.node {
                    Value::String(canonical) => Some(canonical.as_str()),
                    node => field(node, "reference").and_then(Value::as_str),
                };
                if let Some((target_type, _)) = reference.and_then(crate::index::parse_reference) {
                    out.push(Item { node: item.node, type_name: Some(target_type) });
                }
            }
        }
        Func::Extension(url) => {
            for item in input {
                for_each_member(item.node, "extension", &mut |ext| {
                    if field(ext.node, "url").and_then(Value::as_str) == Some(url) {
                        out.push(ext);
                    }
                });
            }
        }
    }
}

/// Depth-first over member `steps` from `item`, pushing what the last step reaches.
fn walk<'a>(item: Item<'a>, steps: &[String], out: &mut Vec<Item<'a>>) {
    match steps.split_first() {
        None => out.push(item),
        Some((step, rest)) => for_each_member(item.node, step, &mut |child| walk(child, rest, out)),
    }
}

/// Child `name` of `node`, flattening arrays. When there is no such key, `name` may be a choice
/// element (`value[x]`): every key `name` + a FHIR type name matches, typed by that suffix.
fn for_each_member<'a>(node: &'a Value, name: &str, f: &mut impl FnMut(Item<'a>)) {
    let Value::Object(map) = node else { return };
    if let Some(child) = field(node, name) {
        return for_each_flat(child, None, f);
    }
    let first = name.as_bytes().first();
    for (key, child) in map {
        if key.len() > name.len() && key.as_bytes().first() == first {
            if let Some(type_name) = key.strip_prefix(name).and_then(choice_type) {
                for_each_flat(child, Some(type_name), f);
            }
        }
    }
}

/// `node[key]` for an object. FHIR objects have few keys, so a scan that compares lengths and first
/// bytes before whole keys beats hashing the key (serde_json's map hashes with SipHash).
pub fn field<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Object(map) = node else {
        return None;
    };
    let first = key.as_bytes().first();
    map.iter().find(|(k, _)| k.len() == key.len() && k.as_bytes().first() == first && *k == key).map(|(_, v)| v)
}

fn for_each_flat<'a>(node: &'a Value, type_name: Option<&'a str>, f: &mut impl FnMut(Item<'a>)) {
    match node {
        Value::Array(items) => items.iter().filter(|v| !v.is_null()).for_each(|node| f(Item { node, type_name })),
        Value::Null => {}
        node => f(Item { node, type_name }),
    }
}

/// The FHIR data type named by a choice element suffix (`Quantity`, `DateTime` -> `dateTime`).
fn choice_type(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "Base64Binary" => "base64Binary",
        "Boolean" => "boolean",
        "Canonical" => "canonical",
        "Code" => "code",
        "Date" => "date",
        "DateTime" => "dateTime",
        "Decimal" => "decimal",
        "Id" => "id",
        "Instant" => "instant",
        "Integer" => "integer",
        "Markdown" => "markdown",
        "Oid" => "oid",
        "PositiveInt" => "positiveInt",
        "String" => "string",
        "Time" => "time",
        "UnsignedInt" => "unsignedInt",
        "Uri" => "uri",
        "Url" => "url",
        "Uuid" => "uuid",
        "Address" => "Address",
        "Age" => "Age",
        "Annotation" => "Annotation",
        "Attachment" => "Attachment",
        "CodeableConcept" => "CodeableConcept",
        "Coding" => "Coding",
        "ContactDetail" => "ContactDetail",
        "ContactPoint" => "ContactPoint",
        "Contributor" => "Contributor",
        "Count" => "Count",
        "DataRequirement" => "DataRequirement",
        "Distance" => "Distance",
        "Dosage" => "Dosage",
        "Duration" => "Duration",
        "Expression" => "Expression",
        "HumanName" => "HumanName",
        "Identifier" => "Identifier",
        "Meta" => "Meta",
        "Money" => "Money",
        "ParameterDefinition" => "ParameterDefinition",
        "Period" => "Period",
        "Quantity" => "Quantity",
        "Range" => "Range",
        "Ratio" => "Ratio",
        "Reference" => "Reference",
        "RelatedArtifact" => "RelatedArtifact",
        "SampledData" => "SampledData",
        "Signature" => "Signature",
        "Timing" => "Timing",
        "TriggerDefinition" => "TriggerDefinition",
        "UsageContext" => "UsageContext",
        _ => return None,
    })
}

fn is_type_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
}

fn is_resource_of_type(node: &Value, type_name: &str) -> bool {
    match field(node, "resourceType").and_then(Value::as_str) {
        Some(resource_type) => resource_type == type_name || type_name == "Resource" || type_name == "DomainResource",
        None => false,
    }
}

fn is_type(item: &Item<'_>, wanted: &str) -> bool {
    if let Some(actual) = item.type_name {
        return actual == wanted || is_quantity_subtype(actual, wanted);
    }
    if field(item.node, "resourceType").is_some() {
        return is_resource_of_type(item.node, wanted);
    }
    // An element that is not a choice has the type its definition says. We do not carry
    // definitions, so accept it when the JSON shape fits (search expressions only use `as` to
    // pick choice variants, so this is the pass-through case).
    match item.node {
        Value::Object(_) => is_type_name(wanted),
        Value::Bool(_) => wanted == "boolean",
        Value::Number(_) => matches!(wanted, "integer" | "decimal" | "unsignedInt" | "positiveInt"),
        Value::String(_) => !is_type_name(wanted) && !matches!(wanted, "boolean" | "integer" | "decimal"),
        _ => false,
    }
}

/// Age, Count, Distance, Duration, MoneyQuantity and SimpleQuantity are profiles of Quantity.
fn is_quantity_subtype(actual: &str, wanted: &str) -> bool {
    wanted == "Quantity"
        && matches!(actual, "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity")
}

/// Boolean value of a collection as FHIRPath sees it in `where`/`and`/`or`: empty is unknown,
/// a single boolean is itself, any other single item is true.
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [item] => Some(item.node.as_bool().unwrap_or(true)),
        _ => None,
    }
}

fn values_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        // With arbitrary_precision, `1.0` and `1` differ as JSON but are equal numbers.
        (Value::Number(l), Value::Number(r)) => l == r || (l.as_f64().is_some() && l.as_f64() == r.as_f64()),
        _ => left == right,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parse an expression.
pub fn parse(source: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(source)?;
    let mut parser = Parser { tokens, pos: 0, source_len: source.len() };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(_) => Err(parser.error("unexpected trailing input")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(String),
    Symbol(&'static str),
}

fn tokenize(source: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let error = |position, message: &str| ParseError { position, message: message.to_owned() };
    let mut tokens = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        let token = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' || c == '%' => {
                let mut ident = String::new();
                while let Some(&(_, c)) = chars.peek().filter(|(i, c)| {
                    c.is_ascii_alphanumeric() || *c == '_' || (*i == start && (*c == '$' || *c == '%'))
                }) {
                    ident.push(c);
                    chars.next();
                }
                Token::Ident(ident)
            }
            '`' | '\'' => {
                let quote = c;
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(error(start, "unterminated string")),
                        Some((_, c)) if c == quote => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => text.push('\n'),
                            Some((_, 't')) => text.push('\t'),
                            Some((_, 'r')) => text.push('\r'),
                            Some((_, c)) => text.push(c),
                            None => return Err(error(start, "unterminated string")),
                        },
                        Some((_, c)) => text.push(c),
                    }
                }
                if quote == '`' {
                    Token::Ident(text)
                } else {
                    Token::Str(text)
                }
            }
            c if c.is_ascii_digit() => {
                let mut number = String::new();
                while let Some(&(_, c)) = chars.peek().filter(|(_, c)| c.is_ascii_digit() || *c == '.') {
                    number.push(c);
                    chars.next();
                }
                Token::Number(number)
            }
            _ => {
                chars.next();
                let symbol = match c {
                    '.' => ".",
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    '|' => "|",
                    ',' => ",",
                    '=' => "=",
                    '!' if chars.next_if(|&(_, c)| c == '=').is_some() => "!=",
                    _ => return Err(error(start, &format!("unsupported character {c:?}"))),
                };
                Token::Symbol(symbol)
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// Recursive descent following FHIRPath operator precedence, loosest first:
/// `or` < `and` < `=`/`!=` < `|` < `is`/`as` < `.`/`[]`.
struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    source_len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn error(&self, message: &str) -> ParseError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, token: usize, message: &str) -> ParseError {
        let position = self.tokens.get(token).map_or(self.source_len, |(p, _)| *p);
        ParseError { position, message: message.to_owned() }
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        token
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Ident(s)) if s == keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), ParseError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{symbol}`")))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.and()?;
        while self.eat_keyword("or") {
            expr = Expr::Or(Box::new(expr), Box::new(self.and()?));
        }
        Ok(expr)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.equality()?;
        while self.eat_keyword("and") {
            expr = Expr::And(Box::new(expr), Box::new(self.equality()?));
        }
        Ok(expr)
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.union()?;
        loop {
            let negate = if self.eat_symbol("=") {
                false
            } else if self.eat_symbol("!=") {
                true
            } else {
                return Ok(expr);
            };
            expr = Expr::Equals { left: Box::new(expr), right: Box::new(self.union()?), negate };
        }
    }

    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.type_test()?;
        while self.eat_symbol("|") {
            expr = Expr::Union(Box::new(expr), Box::new(self.type_test()?));
        }
        Ok(expr)
    }

    fn type_test(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.postfix()?;
        loop {
            let op = if self.eat_keyword("is") {
                TypeOp::Is
            } else if self.eat_keyword("as") {
                TypeOp::As
            } else {
                return Ok(expr);
            };
            let type_name = self.type_specifier()?;
            expr = Expr::Type { on: Box::new(expr), op, type_name };
        }
    }

    /// `Patient`, `FHIR.Patient`, `System.String`: only the FHIR type name is kept.
    fn type_specifier(&mut self) -> Result<String, ParseError> {
        let Some(Token::Ident(mut name)) = self.next() else {
            self.pos -= 1;
            return Err(self.error("expected a type name"));
        };
        if (name == "FHIR" || name == "System") && self.eat_symbol(".") {
            match self.next() {
                Some(Token::Ident(qualified)) => name = qualified,
                _ => return Err(self.error("expected a type name")),
            }
        }
        Ok(name)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.term()?;
        loop {
            if self.eat_symbol(".") {
                expr = self.invocation(expr)?;
            } else if self.eat_symbol("[") {
                let index = match self.next() {
                    Some(Token::Number(n)) => n.parse().map_err(|_| self.error("expected an index"))?,
                    _ => return Err(self.error("expected an index")),
                };
                self.expect_symbol("]")?;
                expr = Expr::Index { on: Box::new(expr), index };
            } else {
                return Ok(expr);
            }
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Token::Symbol("(")) => {
                self.pos += 1;
                let expr = self.or()?;
                self.expect_symbol(")")?;
                Ok(expr)
            }
            Some(Token::Str(_)) | Some(Token::Number(_)) => match self.next() {
                Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
                Some(Token::Number(n)) => {
                    serde_json::from_str(&n).map(Expr::Literal).map_err(|_| self.error("bad number"))
                }
                _ => Err(self.error("expected a literal")),
            },
            Some(Token::Ident(name)) if name == "true" || name == "false" => {
                let value = name == "true";
                self.pos += 1;
                Ok(Expr::Literal(Value::Bool(value)))
            }
            // `%resource` / `%rootResource`: the input of a search expression is the resource.
            Some(Token::Ident(name)) if name == "$this" || name == "%resource" || name == "%rootResource" => {
                self.pos += 1;
                Ok(Expr::This)
            }
            Some(Token::Ident(_)) => self.invocation(Expr::This),
            _ => Err(self.error("expected an expression")),
        }
    }

    /// `name` or `name(args)` applied to `on`.
    fn invocation(&mut self, on: Expr) -> Result<Expr, ParseError> {
        let name_token = self.pos;
        let name = match self.next() {
            Some(Token::Ident(name)) if !name.starts_with(['$', '%']) => name,
            _ => {
                self.pos -= 1;
                return Err(self.error("expected a name"));
            }
        };
        if !self.eat_symbol("(") {
            return Ok(match on {
                Expr::Path { on, mut steps } => {
                    steps.push(name);
                    Expr::Path { on, steps }
                }
                on => Expr::Path { on: Box::new(on), steps: vec![name] },
            });
        }
        let on = Box::new(on);
        let func = match name.as_str() {
            "where" => Func::Where(Box::new(self.or()?)),
            "exists" if !matches!(self.peek(), Some(Token::Symbol(")"))) => {
                // exists(criteria) is where(criteria).exists()
                let criteria = Func::Where(Box::new(self.or()?));
                self.expect_symbol(")")?;
                return Ok(Expr::Call { on: Box::new(Expr::Call { on, func: criteria }), func: Func::Exists });
            }
            "exists" => Func::Exists,
            "empty" => Func::Empty,
            "not" => Func::Not,
            "first" => Func::First,
            "resolve" => Func::Resolve,
            "extension" => match self.next() {
                Some(Token::Str(url)) => Func::Extension(url),
                _ => return Err(self.error("extension() takes a url string")),
            },
            "as" | "ofType" | "is" => {
                let type_name = self.type_specifier()?;
                self.expect_symbol(")")?;
                let op = if name == "is" { TypeOp::Is } else { TypeOp::As };
                return Ok(Expr::Type { on, op, type_name });
            }
            _ => return Err(self.error_at(name_token, &format!("unsupported function {name}()"))),
        };
        self.expect_symbol(")")?;
        Ok(Expr::Call { on, func })
    }
}
