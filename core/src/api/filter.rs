//! `?filter=` expressions: parses Consul's go-bexpr dialect and evaluates it against the JSON
//! form of one response element (PascalCase field names exactly as Consul emits them).
//!
//! Owns the grammar (`or`, `and`, `not`, parentheses, the ten match operators), selector
//! resolution over `serde_json::Value` and the comparison rules. Never decides which elements an
//! endpoint filters, never checks selectors against a schema (Consul rejects unknown selectors up
//! front; without types we read them as null instead), and never does I/O.
//!
//! Semantics, following go-bexpr as Consul uses it wherever JSON allows:
//! * An array met while selector segments remain (`Checks.Status`) is an implicit "any": the
//!   whole match, operator and negation included, is tried on every element and is true if one
//!   element satisfies it. So `Checks.Status != "passing"` means "some check is not passing", and
//!   every match through an empty array is false.
//! * An array or object at the end of the selector is the value itself: `is empty` tests its
//!   length, `in`/`contains` test membership (arrays) or key presence (objects), `matches` is true
//!   if any scalar element matches; it never equals a scalar.
//! * Missing fields and `null` behave as the empty string, like the zero value of an omitted Go
//!   field: `== ""` and `is empty` hold, `contains "x"` does not.
//! * `.Name` segments look the key up exactly, then ASCII case-insensitively; `["key"]` segments
//!   are exact only.
//! * Values are raw text compared by the target's JSON type: strings exactly, numbers numerically
//!   (`8080` and `"8080"` both equal 8080), booleans as Go's `ParseBool` spells them. Bare words
//!   (`true`, `passing`, `a.b`) are values too, as in go-bexpr.

use regex::Regex;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Deepest nesting of parentheses and `not` accepted; keeps recursion (parse, evaluation, drop)
/// far from the stack limit whatever the input.
const MAX_DEPTH: usize = 128;

/// A parsed filter expression, ready to test any number of elements.
#[derive(Clone, Debug)]
pub struct Filter {
    root: Expr,
}

/// Why an expression was rejected. Positions are byte offsets into the expression.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: unterminated string literal")]
    UnterminatedString { position: usize },
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: invalid escape sequence in string literal")]
    InvalidEscape { position: usize },
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: invalid number literal")]
    InvalidNumber { position: usize },
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: unexpected character {found:?}")]
    UnexpectedChar { position: usize, found: char },
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: expected {expected}, found {found}")]
    Unexpected { position: usize, expected: &'static str, found: String },
    #[error("Failed to create boolean expression evaluator: syntax error at position {position}: expression nested more than {max} levels deep", max = MAX_DEPTH)]
    TooDeep { position: usize },
    #[error("Failed to create boolean expression evaluator: invalid regular expression {pattern:?} at position {position}: {error}")]
    InvalidRegex { position: usize, pattern: String, error: regex::Error },
}

impl Filter {
    /// Parses `expr`; malformed expressions and invalid regular expressions are errors.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        let mut parser = Parser { toks: Lexer { src: expr, pos: 0 }.run()?, next: 0, depth: 0 };
        let root = parser.or_expr()?;
        parser.expect_end()?;
        Ok(Filter { root })
    }

    /// Whether the element `v` satisfies the filter.
    pub fn matches(&self, v: &Value) -> bool {
        self.root.eval(v)
    }
}

#[derive(Clone, Debug)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Clone, Debug)]
struct Match {
    selector: Vec<Segment>,
    op: Op,
    /// Set for `!=`, `is not empty`, `not in`, `not contains` and `not matches`. Applied per
    /// element before the implicit "any" over arrays, as go-bexpr does.
    negated: bool,
}

#[derive(Clone, Debug)]
enum Segment {
    /// `.Name`: exact key, then case-insensitive.
    Field(String),
    /// `["key"]`: exact key.
    Key(String),
}

#[derive(Clone, Debug)]
enum Op {
    Equal(String),
    IsEmpty,
    /// Both `Val in Sel` and `Sel contains Val`.
    Contains(String),
    Matches(Regex),
}

impl Expr {
    fn eval(&self, v: &Value) -> bool {
        match self {
            Expr::Or(terms) => terms.iter().any(|t| t.eval(v)),
            Expr::And(terms) => terms.iter().all(|t| t.eval(v)),
            Expr::Not(inner) => !inner.eval(v),
            Expr::Match(m) => m.walk(&m.selector, v),
        }
    }
}

impl Match {
    /// Resolves `path` from `v` and tests what it finds. Loops over object steps so long selectors
    /// cost no stack; only arrays recurse, bounded by the value's own nesting.
    fn walk(&self, mut path: &[Segment], mut v: &Value) -> bool {
        while let Some((seg, rest)) = path.split_first() {
            v = match v {
                Value::Array(items) => return items.iter().any(|item| self.walk(path, item)),
                Value::Object(map) => match seg.lookup(map) {
                    Some(found) => found,
                    None => return self.test(&Value::Null),
                },
                // A scalar has no fields: the rest of the path is missing.
                _ => return self.test(&Value::Null),
            };
            path = rest;
        }
        self.test(v)
    }

    fn test(&self, v: &Value) -> bool {
        let hit = match &self.op {
            Op::Equal(raw) => scalar_eq(raw, v),
            Op::IsEmpty => is_empty(v),
            Op::Contains(raw) => contains(raw, v),
            Op::Matches(re) => match v {
                Value::Array(items) => {
                    items.iter().any(|item| scalar_text(item).is_some_and(|t| re.is_match(&t)))
                }
                _ => scalar_text(v).is_some_and(|t| re.is_match(&t)),
            },
        };
        hit != self.negated
    }
}

impl Segment {
    fn lookup<'v>(&self, map: &'v Map<String, Value>) -> Option<&'v Value> {
        match self {
            Segment::Key(key) => map.get(key),
            Segment::Field(name) => map
                .get(name)
                .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)),
        }
    }

    fn text(&self) -> &str {
        match self {
            Segment::Field(s) | Segment::Key(s) => s,
        }
    }
}

fn scalar_eq(raw: &str, v: &Value) -> bool {
    match v {
        Value::Null => raw.is_empty(),
        Value::String(s) => s == raw,
        Value::Bool(b) => parse_bool(raw) == Some(*b),
        Value::Number(n) => {
            // Exact integer comparison first so large IDs don't lose precision through f64.
            if let (Some(a), Ok(b)) = (n.as_i64(), raw.parse::<i64>()) {
                a == b
            } else if let (Some(a), Ok(b)) = (n.as_u64(), raw.parse::<u64>()) {
                a == b
            } else {
                matches!((n.as_f64(), raw.parse::<f64>()), (Some(a), Ok(b)) if a == b)
            }
        }
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// The spellings Go's `strconv.ParseBool` accepts, which is what go-bexpr coerces with.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn contains(raw: &str, v: &Value) -> bool {
    match v {
        Value::Null => raw.is_empty(),
        Value::String(s) => s.contains(raw),
        Value::Array(items) => items.iter().any(|item| scalar_eq(raw, item)),
        Value::Object(map) => map.contains_key(raw),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The text a regular expression sees for a scalar; containers have none.
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => Some(Cow::Borrowed("")),
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
    Eq,
    Ne,
    /// A quoted literal, escapes already resolved.
    Str(String),
    /// A number literal, kept as written: it is compared as text or number by the target type.
    Num(String),
    Word(String),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: usize,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn run(mut self) -> Result<Vec<Token>, FilterError> {
        let mut toks = Vec::new();
        while let Some(c) = self.peek() {
            let pos = self.pos;
            let tok = match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.bump();
                    continue;
                }
                '(' => self.single(Tok::LParen),
                ')' => self.single(Tok::RParen),
                '[' => self.single(Tok::LBracket),
                ']' => self.single(Tok::RBracket),
                '.' => self.single(Tok::Dot),
                '=' | '!' => {
                    self.bump();
                    if self.peek() != Some('=') {
                        return Err(FilterError::UnexpectedChar { position: pos, found: c });
                    }
                    self.bump();
                    if c == '=' {
                        Tok::Eq
                    } else {
                        Tok::Ne
                    }
                }
                '"' => Tok::Str(self.quoted()?),
                '`' => Tok::Str(self.raw()?),
                '-' | '0'..='9' => Tok::Num(self.number()?),
                c if c.is_ascii_alphabetic() => {
                    self.eat_while(|c| c.is_ascii_alphanumeric() || c == '_');
                    Tok::Word(self.src[pos..self.pos].to_owned())
                }
                found => return Err(FilterError::UnexpectedChar { position: pos, found }),
            };
            toks.push(Token { tok, pos });
        }
        toks.push(Token { tok: Tok::End, pos: self.src.len() });
        Ok(toks)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.bump();
        tok
    }

    fn eat_while(&mut self, keep: impl Fn(char) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        self.pos - start
    }

    /// `-`? digits (`.` digits)?, which must end at whitespace, `)` or the end of input so that
    /// `12ab` is one bad literal rather than a number followed by a word.
    fn number(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let bad = FilterError::InvalidNumber { position: start };
        if self.peek() == Some('-') {
            self.bump();
        }
        if self.eat_while(|c| c.is_ascii_digit()) == 0 {
            return Err(bad);
        }
        let rest = &self.src[self.pos..];
        if rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
            self.bump();
            self.eat_while(|c| c.is_ascii_digit());
        }
        match self.peek() {
            None | Some(' ' | '\t' | '\r' | '\n' | ')') => Ok(self.src[start..self.pos].to_owned()),
            Some(_) => Err(bad),
        }
    }

    fn raw(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        self.bump();
        let body = self.pos;
        self.eat_while(|c| c != '`');
        let text = self.src[body..self.pos].to_owned();
        match self.bump() {
            Some(_) => Ok(text),
            None => Err(FilterError::UnterminatedString { position: start }),
        }
    }

    /// A double-quoted literal with Go's escapes (`\"`, `\\`, `\n`, `\xHH`, `\uHHHH`, ...).
    fn quoted(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let esc = self.pos;
            let c = match self.bump() {
                None => return Err(FilterError::UnterminatedString { position: start }),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    None => return Err(FilterError::UnterminatedString { position: start }),
                    Some(e) if "abfnrtv\\\"xuU01234567".contains(e) => {
                        self.escape(e).ok_or(FilterError::InvalidEscape { position: esc })?
                    }
                    // Go rejects other escapes; keeping them verbatim lets `"^v\d+"` reach a
                    // regular expression intact.
                    Some(e) => {
                        out.push('\\');
                        e
                    }
                },
                Some(c) => c,
            };
            out.push(c);
        }
    }

    fn escape(&mut self, e: char) -> Option<char> {
        Some(match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' | '"' => e,
            'x' => self.code_point(2, 16)?,
            'u' => self.code_point(4, 16)?,
            'U' => self.code_point(8, 16)?,
            '0'..='7' => {
                self.pos -= 1; // the first octal digit is part of the value
                self.code_point(3, 8)?
            }
            _ => return None,
        })
    }

    fn code_point(&mut self, digits: usize, radix: u32) -> Option<char> {
        let text = self.src[self.pos..].get(..digits)?;
        let n = u32::from_str_radix(text, radix).ok()?;
        // from_str_radix tolerates a leading '+', escapes do not.
        if text.starts_with('+') {
            return None;
        }
        self.pos += digits;
        char::from_u32(n)
    }
}

struct Parser {
    toks: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends the list with `End`, which is never consumed.
        &self.toks[self.next.min(self.toks.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.next += 1;
        }
        t
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let hit = self.at_word(word);
        if hit {
            self.advance();
        }
        hit
    }

    fn unexpected(&self, expected: &'static str) -> FilterError {
        unexpected_at(self.peek(), expected)
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<(), FilterError> {
        if self.peek().tok != tok {
            return Err(self.unexpected(expected));
        }
        self.advance();
        Ok(())
    }

    fn expect_end(&self) -> Result<(), FilterError> {
        match self.peek().tok {
            Tok::End => Ok(()),
            _ => Err(self.unexpected("\"and\", \"or\" or end of input")),
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, FilterError>) -> Result<T, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(FilterError::TooDeep { position: self.peek().pos });
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.and_expr()?];
        while self.eat_word("or") {
            terms.push(self.and_expr()?);
        }
        Ok(flatten(terms, Expr::Or))
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.unary()?];
        while self.eat_word("and") {
            terms.push(self.unary()?);
        }
        Ok(flatten(terms, Expr::And))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat_word("not") {
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.peek().tok == Tok::LParen {
            self.advance();
            let inner = self.nested(Self::or_expr)?;
            self.expect(Tok::RParen, "\")\" (unmatched parentheses)")?;
            return Ok(inner);
        }
        self.match_expr().map(Expr::Match)
    }

    fn match_expr(&mut self) -> Result<Match, FilterError> {
        match &self.peek().tok {
            Tok::Str(_) | Tok::Num(_) => {
                let (value, _) = self.value()?;
                let negated = self.eat_word("not");
                if !self.eat_word("in") {
                    return Err(self.unexpected(if negated {
                        "\"in\""
                    } else {
                        "\"in\" or \"not in\" after a quoted or numeric value"
                    }));
                }
                self.in_selector(value, negated)
            }
            Tok::Word(_) => {
                let path = self.path()?;
                self.operator(path)
            }
            _ => Err(self.unexpected("a selector, a value or \"(\"")),
        }
    }

    /// The operator after a leading path. For `in`/`not in` that path was really a bare value.
    fn operator(&mut self, selector: Vec<Segment>) -> Result<Match, FilterError> {
        let t = self.advance();
        let negated = match &t.tok {
            Tok::Eq | Tok::Ne => {
                let (raw, _) = self.value()?;
                return Ok(Match { selector, op: Op::Equal(raw), negated: t.tok == Tok::Ne });
            }
            Tok::Word(w) if w == "is" => {
                let negated = self.eat_word("not");
                if !self.eat_word("empty") {
                    return Err(self.unexpected("\"empty\" or \"not empty\" after \"is\""));
                }
                return Ok(Match { selector, op: Op::IsEmpty, negated });
            }
            Tok::Word(w) => w == "not",
            _ => return Err(unexpected_at(&t, "an operator")),
        };
        let t = if negated { self.advance() } else { t };
        match &t.tok {
            Tok::Word(w) if w == "in" => self.in_selector(join(&selector), negated),
            Tok::Word(w) if w == "contains" => {
                let (raw, _) = self.value()?;
                Ok(Match { selector, op: Op::Contains(raw), negated })
            }
            Tok::Word(w) if w == "matches" => {
                let (pattern, position) = self.value()?;
                let re = Regex::new(&pattern).map_err(|error| FilterError::InvalidRegex {
                    position,
                    pattern,
                    error,
                })?;
                Ok(Match { selector, op: Op::Matches(re), negated })
            }
            _ if negated => Err(unexpected_at(&t, "\"in\", \"contains\" or \"matches\" after \"not\"")),
            _ => Err(unexpected_at(&t, "an operator")),
        }
    }

    /// The selector of `Val in Sel` / `Val not in Sel`, the operator already read.
    fn in_selector(&mut self, value: String, negated: bool) -> Result<Match, FilterError> {
        Ok(Match { selector: self.path()?, op: Op::Contains(value), negated })
    }

    /// A value: quoted, number, or a bare word path taken as its text (`true`, `passing`).
    fn value(&mut self) -> Result<(String, usize), FilterError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Str(s) | Tok::Num(s) => {
                self.advance();
                Ok((s, t.pos))
            }
            Tok::Word(_) => Ok((join(&self.path()?), t.pos)),
            _ => Err(self.unexpected("a value")),
        }
    }

    /// `Ident ( "." Ident | "[" string "]" )*`
    fn path(&mut self) -> Result<Vec<Segment>, FilterError> {
        let Tok::Word(first) = self.peek().tok.clone() else {
            return Err(self.unexpected("a selector"));
        };
        self.advance();
        let mut segs = vec![Segment::Field(first)];
        loop {
            match self.peek().tok {
                Tok::Dot => {
                    self.advance();
                    match self.peek().tok.clone() {
                        Tok::Word(w) => {
                            self.advance();
                            segs.push(Segment::Field(w));
                        }
                        _ => return Err(self.unexpected("a field name after \".\"")),
                    }
                }
                Tok::LBracket => {
                    self.advance();
                    match self.peek().tok.clone() {
                        Tok::Str(key) => {
                            self.advance();
                            segs.push(Segment::Key(key));
                        }
                        _ => return Err(self.unexpected("a quoted key inside \"[ ]\"")),
                    }
                    self.expect(Tok::RBracket, "\"]\" closing the index")?;
                }
                _ => return Ok(segs),
            }
        }
    }
}

fn flatten(mut terms: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        join(terms)
    }
}

/// A path read where a value was due, as go-bexpr renders it: segments joined by dots.
fn join(path: &[Segment]) -> String {
    path.iter().map(Segment::text).collect::<Vec<_>>().join(".")
}

fn unexpected_at(t: &Token, expected: &'static str) -> FilterError {
    FilterError::Unexpected { position: t.pos, expected, found: describe(&t.tok) }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::LBracket => "\"[\"".into(),
        Tok::RBracket => "\"]\"".into(),
        Tok::Dot => "\".\"".into(),
        Tok::Eq => "\"==\"".into(),
        Tok::Ne => "\"!=\"".into(),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Word(w) => format!("{w:?}"),
        Tok::End => "end of input".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn health_check() -> Value {
        json!({
            "Node": "n1",
            "CheckID": "service:web1",
            "Name": "Service 'web' check",
            "Status": "passing",
            "Notes": "",
            "Output": "HTTP GET http://10.0.0.1:8080/health: 200 OK",
            "ServiceID": "web1",
            "ServiceName": "web",
            "ServiceTags": ["primary", "v1"],
            "Type": "http",
            "Interval": "10s",
            "Timeout": "1s",
            "ExposedPort": 0,
            "Definition": {"HTTP": "http://10.0.0.1:8080/health", "Interval": "10s", "Timeout": "1s"},
            "CreateIndex": 12,
            "ModifyIndex": 40
        })
    }

    fn check_service_node() -> Value {
        json!({
            "Node": {
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "n1",
                "Address": "10.0.0.1",
                "Datacenter": "dc1",
                "TaggedAddresses": {"lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "wan": "198.51.100.1", "wan_ipv4": "198.51.100.1"},
                "Meta": {"consul-network-segment": "", "rack": "r1"},
                "CreateIndex": 5,
                "ModifyIndex": 7
            },
            "Service": {
                "ID": "web1",
                "Service": "web",
                "Tags": ["primary", "v1"],
                "Address": "",
                "Meta": {"env": "prod", "version": "1.2.3"},
                "Port": 8080,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": false,
                "Proxy": {"Expose": {}},
                "Connect": {},
                "CreateIndex": 9,
                "ModifyIndex": 9
            },
            "Checks": [
                {
                    "Node": "n1", "CheckID": "serfHealth", "Name": "Serf Health Status",
                    "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                    "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                    "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
                    "CreateIndex": 5, "ModifyIndex": 5
                },
                {
                    "Node": "n1", "CheckID": "service:web1", "Name": "Service 'web' check",
                    "Status": "critical", "Notes": "", "Output": "connection refused",
                    "ServiceID": "web1", "ServiceName": "web", "ServiceTags": ["primary", "v1"],
                    "Type": "http", "Interval": "10s", "Timeout": "1s", "ExposedPort": 0,
                    "Definition": {"HTTP": "http://10.0.0.1:8080/health"},
                    "CreateIndex": 12, "ModifyIndex": 40
                }
            ]
        })
    }

    fn agent_service() -> Value {
        json!({
            "ID": "redis1",
            "Service": "redis",
            "Tags": ["cache", "primary"],
            "Meta": {"env": "staging", "Team": "core", "weight": "10"},
            "Port": 6379,
            "Address": "10.0.0.2",
            "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.2", "Port": 6379}},
            "Weights": {"Passing": 10, "Warning": 1},
            "EnableTagOverride": true,
            "Datacenter": "dc1"
        })
    }

    #[track_caller]
    fn eval(expr: &str, v: &Value) -> bool {
        match Filter::parse(expr) {
            Ok(f) => f.matches(v),
            Err(e) => panic!("{expr:?} should parse: {e}"),
        }
    }

    #[track_caller]
    fn parse_err(expr: &str) -> FilterError {
        match Filter::parse(expr) {
            Ok(f) => panic!("{expr:?} should not parse, got {f:?}"),
            Err(e) => e,
        }
    }

    // ---- equality ----

    #[test]
    fn equal_and_not_equal_on_strings() {
        let hc = health_check();
        assert!(eval(r#"Status == "passing""#, &hc));
        assert!(!eval(r#"Status == "critical""#, &hc));
        assert!(eval(r#"Status != "critical""#, &hc));
        assert!(!eval(r#"Status != "passing""#, &hc));
        assert!(eval(r#"ServiceName=="web""#, &hc), "no spaces around ==");
    }

    #[test]
    fn string_equality_is_exact_and_case_sensitive() {
        let hc = health_check();
        assert!(!eval(r#"Status == "Passing""#, &hc));
        assert!(!eval(r#"Status == "passing ""#, &hc));
    }

    #[test]
    fn nested_selectors() {
        let csn = check_service_node();
        assert!(eval(r#"Service.Service == "web""#, &csn));
        assert!(eval(r#"Node.Datacenter == "dc1""#, &csn));
        assert!(eval(r#"Service.Meta.env == "prod""#, &csn));
        assert!(!eval(r#"Service.Meta.env == "staging""#, &csn));
        assert!(eval(r#"Node.TaggedAddresses.wan == "198.51.100.1""#, &csn));
    }

    #[test]
    fn index_selectors() {
        let csn = check_service_node();
        assert!(eval(r#"Node.Meta["rack"] == "r1""#, &csn));
        assert!(eval(r#"Node.Meta["consul-network-segment"] == """#, &csn));
        assert!(eval(r#"Service.Meta[ "env" ] == "prod""#, &csn));
        assert!(eval(r#"Service["Meta"]["version"] == "1.2.3""#, &csn));
        assert!(eval(r#"Node.Meta[`rack`] == "r1""#, &csn));
        let sn = json!({"NodeMeta": {"rack": "r2"}, "ServiceName": "db"});
        assert!(eval(r#"NodeMeta["rack"] == "r2""#, &sn));
    }

    #[test]
    fn numbers_compare_numerically() {
        let csn = check_service_node();
        assert!(eval("Service.Port == 8080", &csn));
        assert!(eval(r#"Service.Port == "8080""#, &csn));
        assert!(eval("Service.Port == 8080.0", &csn));
        assert!(!eval("Service.Port == 8081", &csn));
        assert!(eval("Service.Port != 8081", &csn));
        assert!(!eval(r#"Service.Port == "web""#, &csn), "non-numeric never equals a number");
        assert!(eval("Service.Weights.Passing == 1", &csn));
        let v = json!({"Lag": -3, "Ratio": 0.25, "Big": u64::MAX});
        assert!(eval("Lag == -3", &v));
        assert!(eval("Ratio == 0.25", &v));
        assert!(eval("Big == 18446744073709551615", &v));
        assert!(!eval("Big == 18446744073709551614", &v), "no precision lost through f64");
    }

    #[test]
    fn numbers_against_strings_compare_as_text() {
        let svc = agent_service();
        assert!(eval("Meta.weight == 10", &svc));
        assert!(!eval("Meta.weight == 10.0", &svc));
    }

    #[test]
    fn booleans() {
        let svc = agent_service();
        assert!(eval("EnableTagOverride == true", &svc));
        assert!(eval(r#"EnableTagOverride == "true""#, &svc));
        assert!(eval("EnableTagOverride == True", &svc));
        assert!(eval("EnableTagOverride == 1", &svc));
        assert!(!eval("EnableTagOverride == false", &svc));
        assert!(eval("EnableTagOverride != false", &svc));
        assert!(!eval(r#"EnableTagOverride == "yes""#, &svc));
        assert!(eval("Service.EnableTagOverride == false", &check_service_node()));
    }

    #[test]
    fn bare_words_are_values() {
        let hc = health_check();
        assert!(eval("Status == passing", &hc));
        assert!(eval("Type != tcp", &hc));
        assert!(matches!(parse_err("Interval == 10s"), FilterError::InvalidNumber { .. }));
        assert!(eval("Name == a.b", &json!({"Name": "a.b"})));
    }

    #[test]
    fn backtick_strings_are_raw() {
        let v = json!({"Notes": r"C:\path \d", "Output": "say \"hi\""});
        assert!(eval(r"Notes == `C:\path \d`", &v));
        assert!(eval(r#"Output == `say "hi"`"#, &v));
    }

    #[test]
    fn double_quoted_escapes() {
        let v = json!({"Output": "say \"hi\"\n\tbye\\", "Name": "é!"});
        assert!(eval(r#"Output == "say \"hi\"\n\tbye\\""#, &v));
        assert!(eval(r#"Name == "\u00e9\x21""#, &v));
        assert!(eval(r#"Name == "\U000000e9\041""#, &v));
        assert!(eval(r#"Name == "é!""#, &v), "non-ASCII passes through");
        let re = json!({"Pattern": r"^v\d+\.x"});
        assert!(eval(r#"Pattern == "^v\d+\.x""#, &re), "unknown escapes stay verbatim");
        // The regex is `^\^v\\d`: a literal caret, `v`, a literal backslash, `d`.
        assert!(eval(r#"Pattern matches "^\^v\\\\d""#, &re));
    }

    // ---- missing and null ----

    #[test]
    fn missing_and_null_read_as_empty_string() {
        let csn = check_service_node();
        assert!(eval(r#"Service.PeerName == """#, &csn));
        assert!(eval("Service.PeerName is empty", &csn));
        assert!(!eval(r#"Service.PeerName == "x""#, &csn));
        assert!(eval(r#"Service.PeerName != "x""#, &csn));
        assert!(eval(r#"Service.Meta.missing != "prod""#, &csn));
        assert!(!eval(r#"Service.Meta.missing contains "p""#, &csn));
        assert!(eval(r#"Service.Meta.missing not contains "p""#, &csn));
        assert!(eval(r#"Nope.Deeper.Still == """#, &csn));
        // A scalar has no fields.
        assert!(eval(r#"Service.Port.Foo is empty"#, &csn));
        let v = json!({"TaggedAddresses": null});
        assert!(eval("TaggedAddresses is empty", &v));
        assert!(eval(r#"TaggedAddresses.lan == """#, &v));
        assert!(!eval(r#""lan" in TaggedAddresses"#, &v));
    }

    // ---- field name case ----

    #[test]
    fn field_names_fall_back_to_case_insensitive() {
        let csn = check_service_node();
        assert!(eval(r#"service.service == "web""#, &csn));
        assert!(eval(r#"SERVICE.META.ENV == "prod""#, &csn));
        let v = json!({"Name": "exact", "name": "lower"});
        assert!(eval(r#"name == "lower""#, &v), "exact match wins");
        assert!(eval(r#"Name == "exact""#, &v));
    }

    #[test]
    fn index_keys_are_exact() {
        let csn = check_service_node();
        assert!(!eval(r#"Service.Meta["ENV"] == "prod""#, &csn));
        assert!(eval(r#"Service.Meta["ENV"] is empty"#, &csn));
        assert!(eval(r#"service["Meta"]["env"] == "prod""#, &csn));
    }

    // ---- emptiness ----

    #[test]
    fn is_empty_and_is_not_empty() {
        let hc = health_check();
        assert!(eval("Notes is empty", &hc));
        assert!(!eval("Notes is not empty", &hc));
        assert!(eval("Output is not empty", &hc));
        assert!(eval("ServiceTags is not empty", &hc));
        assert!(eval("Definition is not empty", &hc));
        assert!(!eval("ExposedPort is empty", &hc), "numbers are never empty");
        let csn = check_service_node();
        assert!(eval("Service.Connect is empty", &csn));
        assert!(eval("Service.Proxy is not empty", &csn));
        assert!(eval("Service.Address is empty", &csn));
        let v = json!({"Tags": [], "Meta": {}});
        assert!(eval("Tags is empty", &v));
        assert!(eval("Meta is empty", &v));
        assert!(eval("Missing is empty", &v));
        assert!(!eval("Missing is not empty", &v));
    }

    // ---- in / contains ----

    #[test]
    fn in_and_contains_on_lists_mean_membership() {
        let svc = agent_service();
        assert!(eval(r#""primary" in Tags"#, &svc));
        assert!(eval(r#"Tags contains "cache""#, &svc));
        assert!(!eval(r#""prim" in Tags"#, &svc), "membership, not substring");
        assert!(eval(r#""v2" not in Tags"#, &svc));
        assert!(!eval(r#""cache" not in Tags"#, &svc));
        assert!(eval(r#"Tags not contains "v2""#, &svc));
        assert!(!eval(r#"Tags not contains "cache""#, &svc));
        assert!(eval("primary in Tags", &svc), "bare word value");
        assert!(eval("v2 not in Tags", &svc));
        assert!(!eval("cache not in Tags", &svc));
        assert!(!eval(r#""x" in Missing"#, &svc));
        assert!(eval(r#""x" not in Missing"#, &svc));
        let v = json!({"Ports": [80, 443], "Flags": [true]});
        assert!(eval("443 in Ports", &v));
        assert!(eval(r#"Ports contains "80""#, &v));
        assert!(!eval("8080 in Ports", &v));
        assert!(eval("Flags contains true", &v));
    }

    #[test]
    fn in_and_contains_on_strings_mean_substring() {
        let hc = health_check();
        assert!(eval(r#""200 OK" in Output"#, &hc));
        assert!(eval(r#"Output contains "8080""#, &hc));
        assert!(eval("Output contains 8080", &hc));
        assert!(!eval(r#"Output contains "500""#, &hc));
        assert!(eval(r#""500" not in Output"#, &hc));
        assert!(eval(r#"CheckID contains "service:""#, &hc));
    }

    #[test]
    fn in_and_contains_on_maps_mean_key_presence() {
        let csn = check_service_node();
        assert!(eval(r#""env" in Service.Meta"#, &csn));
        assert!(eval(r#"Node.Meta contains "rack""#, &csn));
        assert!(!eval(r#""prod" in Service.Meta"#, &csn), "keys, not values");
        assert!(eval(r#""zone" not in Node.Meta"#, &csn));
        assert!(!eval(r#""RACK" in Node.Meta"#, &csn), "key presence is exact");
        assert!(eval(r#""lan_ipv4" in TaggedAddresses"#, &agent_service()));
    }

    #[test]
    fn contains_on_numbers_and_bools_is_false() {
        let svc = agent_service();
        assert!(!eval("Port contains 63", &svc));
        assert!(eval("Port not contains 63", &svc));
        assert!(!eval("EnableTagOverride contains true", &svc));
    }

    // ---- matches ----

    #[test]
    fn matches_on_strings() {
        let hc = health_check();
        assert!(eval(r#"CheckID matches "^service:""#, &hc));
        assert!(eval(r#"Name matches "web""#, &hc), "unanchored like Go");
        assert!(!eval(r#"Name matches "^web""#, &hc));
        assert!(eval(r#"Name not matches "^web""#, &hc));
        assert!(eval(r"Output matches `\d{3} OK$`", &hc));
        assert!(eval(r#"Output matches "\\d{3} OK$""#, &hc));
        assert!(eval(r#"Node matches "(?i)^N1$""#, &hc));
    }

    #[test]
    fn matches_on_lists_is_any_element() {
        let svc = agent_service();
        assert!(eval(r#"Tags matches "^pri""#, &svc));
        assert!(!eval(r#"Tags matches "^v\d""#, &svc));
        assert!(eval(r#"Tags not matches "^v\d""#, &svc));
        assert!(!eval(r#"Tags not matches "ca""#, &svc));
    }

    #[test]
    fn matches_on_scalars_uses_their_text() {
        let svc = agent_service();
        assert!(eval(r#"Port matches "^63""#, &svc));
        assert!(eval(r#"EnableTagOverride matches "^true$""#, &svc));
        assert!(eval(r#"Missing matches "^$""#, &svc), "missing reads as empty");
        assert!(!eval(r#"Meta matches ".*""#, &svc), "objects have no text");
        assert!(eval(r#"Meta not matches ".*""#, &svc));
    }

    #[test]
    fn invalid_regex_is_a_parse_error() {
        let e = parse_err(r#"Name matches "(unclosed""#);
        assert!(matches!(e, FilterError::InvalidRegex { position: 13, .. }), "{e:?}");
        assert!(e.to_string().contains("invalid regular expression"), "{e}");
    }

    // ---- arrays along the path ----

    #[test]
    fn arrays_along_the_path_match_any_element() {
        let csn = check_service_node();
        assert!(eval(r#"Checks.Status == "passing""#, &csn));
        assert!(eval(r#"Checks.Status == "critical""#, &csn));
        assert!(!eval(r#"Checks.Status == "warning""#, &csn));
        assert!(eval(r#"Checks.CheckID == "serfHealth""#, &csn));
        assert!(eval(r#"Checks.ServiceTags contains "v1""#, &csn));
        assert!(eval(r#"Checks.ServiceTags is empty"#, &csn), "serfHealth has none");
        assert!(eval(r#"Checks.Definition.HTTP matches ":8080/""#, &csn));
        assert!(eval(r#""refused" in Checks.Output"#, &csn));
    }

    #[test]
    fn negated_operators_through_arrays_are_any_not_all() {
        // go-bexpr applies the negated operator to each element, then "any".
        let csn = check_service_node();
        assert!(eval(r#"Checks.Status != "passing""#, &csn), "one check is critical");
        assert!(eval(r#"Checks.Status != "critical""#, &csn), "one check is passing");
        assert!(!eval(r#"Checks.Status != "warning" and Checks.Status == "warning""#, &csn));
        // "every check passing" is spelled with `not`.
        assert!(!eval(r#"not Checks.Status != "passing""#, &csn));
        let all_ok = json!({"Checks": [{"Status": "passing"}, {"Status": "passing"}]});
        assert!(eval(r#"not Checks.Status != "passing""#, &all_ok));
        assert!(!eval(r#"Checks.Status != "passing""#, &all_ok));
    }

    #[test]
    fn empty_arrays_along_the_path_match_nothing() {
        let v = json!({"Checks": []});
        for expr in [
            r#"Checks.Status == "passing""#,
            r#"Checks.Status != "passing""#,
            "Checks.Status is empty",
            "Checks.Status is not empty",
            r#""x" not in Checks.Status"#,
            r#"Checks.Status not matches "x""#,
        ] {
            assert!(!eval(expr, &v), "{expr}");
        }
        assert!(eval("Checks is empty", &v), "the array itself is a value");
    }

    #[test]
    fn nested_arrays_along_the_path() {
        let v = json!({"Groups": [[{"Name": "a"}], [{"Name": "b"}, "scalar"]]});
        assert!(eval(r#"Groups.Name == "b""#, &v));
        assert!(!eval(r#"Groups.Name == "c""#, &v));
    }

    #[test]
    fn arrays_and_objects_never_equal_scalars() {
        let svc = agent_service();
        assert!(!eval(r#"Tags == "cache""#, &svc));
        assert!(eval(r#"Tags != "cache""#, &svc));
        assert!(!eval(r#"Meta == """#, &svc));
    }

    // ---- boolean structure ----

    #[test]
    fn and_or_not() {
        let hc = health_check();
        assert!(eval(r#"Status == "passing" and ServiceName == "web""#, &hc));
        assert!(!eval(r#"Status == "passing" and ServiceName == "db""#, &hc));
        assert!(eval(r#"Status == "critical" or ServiceName == "web""#, &hc));
        assert!(!eval(r#"Status == "critical" or ServiceName == "db""#, &hc));
        assert!(eval(r#"not Status == "critical""#, &hc));
        assert!(!eval(r#"not Status == "passing""#, &hc));
        assert!(eval(r#"not not Status == "passing""#, &hc));
        assert!(eval(
            r#"Status == "passing" and Type == "http" and "v1" in ServiceTags and Node == "n1""#,
            &hc
        ));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let hc = health_check();
        // true or (false and false)
        assert!(eval(r#"Status == "passing" or Status == "x" and Node == "x""#, &hc));
        // (false and false) or true
        assert!(eval(r#"Status == "x" and Node == "x" or Status == "passing""#, &hc));
        // (true or false) and false: only with parentheses
        assert!(!eval(r#"(Status == "passing" or Status == "x") and Node == "x""#, &hc));
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let hc = health_check();
        // (not false) and true
        assert!(eval(r#"not Status == "x" and Node == "n1""#, &hc));
        // not (false and true) = true, (not false) and false = false
        assert!(eval(r#"not (Status == "x" and Node == "n1")"#, &hc));
        assert!(!eval(r#"not Status == "x" and Node == "zz""#, &hc));
    }

    #[test]
    fn parentheses() {
        let hc = health_check();
        assert!(eval(r#"(Status == "passing")"#, &hc));
        assert!(eval(r#"  ( ( Status == "passing" ) )  "#, &hc));
        assert!(eval(r#"(Status == "x" or Status == "passing") and (Node == "n1")"#, &hc));
        assert!(eval(r#"not(Status == "x")"#, &hc));
        assert!(eval("\tStatus\n==\r\n\"passing\"\n", &hc), "any whitespace");
    }

    #[test]
    fn keywords_are_lowercase_only() {
        parse_err(r#"Status == "passing" AND Node == "n1""#);
        parse_err(r#"Status == "passing" Or Node == "n1""#);
        parse_err(r#"Status IS EMPTY"#);
        parse_err(r#"Tags CONTAINS "x""#);
    }

    #[test]
    fn long_chains_parse_without_deep_recursion() {
        let expr = vec![r#"Status == "passing""#; 5000].join(" and ");
        assert!(eval(&expr, &health_check()));
        let expr = vec![r#"Status == "x""#; 5000].join(" or ");
        assert!(!eval(&expr, &health_check()));
        let long_selector = format!("A{} is empty", ".B".repeat(20_000));
        assert!(eval(&long_selector, &health_check()));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}Status == \"passing\"{}", "(".repeat(100), ")".repeat(100));
        assert!(eval(&ok, &health_check()));
        let deep = format!("{}Status == \"passing\"{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(parse_err(&deep), FilterError::TooDeep { .. }));
        let nots = format!("{}Status == \"passing\"", "not ".repeat(10_000));
        assert!(matches!(parse_err(&nots), FilterError::TooDeep { .. }));
    }

    // ---- errors ----

    #[test]
    fn unterminated_strings() {
        assert!(matches!(
            parse_err(r#"Status == "passing"#),
            FilterError::UnterminatedString { position: 10 }
        ));
        assert!(matches!(parse_err("Status == `passing"), FilterError::UnterminatedString { position: 10 }));
        assert!(matches!(parse_err(r#"Status == "ends in escape\"#), FilterError::UnterminatedString { .. }));
        assert!(matches!(
            parse_err(r#"Meta["k] == "x""#),
            FilterError::Unexpected { .. } | FilterError::UnterminatedString { .. }
        ));
    }

    #[test]
    fn bad_escapes_and_numbers() {
        assert!(matches!(parse_err(r#"Name == "a\x4g""#), FilterError::InvalidEscape { position: 10 }));
        assert!(matches!(parse_err(r#"Name == "\x4""#), FilterError::InvalidEscape { .. }));
        assert!(matches!(parse_err(r#"Name == "\u+041""#), FilterError::InvalidEscape { .. }));
        assert!(matches!(parse_err(r#"Name == "\ud800""#), FilterError::InvalidEscape { .. }));
        assert!(matches!(parse_err("Port == 80x"), FilterError::InvalidNumber { position: 8 }));
        assert!(matches!(parse_err("Port == -"), FilterError::InvalidNumber { .. }));
        assert!(matches!(parse_err("Port == 1.2.3"), FilterError::InvalidNumber { .. }));
    }

    #[test]
    fn missing_operands() {
        for expr in [
            "",
            "   ",
            "Status",
            "Status ==",
            "Status !=",
            r#"== "passing""#,
            "Status is",
            "Status is not",
            "Status contains",
            "Status not",
            r#""x" in"#,
            r#""x" not"#,
            r#""x""#,
            r#""x" == Status"#,
            r#"Status == "a" and"#,
            r#"Status == "a" or"#,
            "not",
            "()",
            "Meta[]",
            r#"Meta["k"] =="#,
            "Service.",
            r#"Meta[abc] == "x""#,
        ] {
            assert!(
                matches!(parse_err(expr), FilterError::Unexpected { .. }),
                "{expr:?}: {:?}",
                Filter::parse(expr)
            );
        }
    }

    #[test]
    fn trailing_garbage_and_bad_characters() {
        for expr in [
            r#"Status == "passing" Node"#,
            r#"Status == "passing")"#,
            r#"(Status == "passing""#,
            r#"Status == "passing" "extra""#,
            r#"Status == "a" and and Node == "b""#,
            r#"Meta["k" == "x""#,
        ] {
            assert!(
                matches!(parse_err(expr), FilterError::Unexpected { .. }),
                "{expr:?}: {:?}",
                Filter::parse(expr)
            );
        }
        assert!(matches!(
            parse_err(r#"Status = "passing""#),
            FilterError::UnexpectedChar { position: 7, found: '=' }
        ));
        assert!(matches!(
            parse_err(r#"Status == "a" && Node == "b""#),
            FilterError::UnexpectedChar { found: '&', .. }
        ));
        assert!(matches!(parse_err(r#"Status ! "a""#), FilterError::UnexpectedChar { found: '!', .. }));
        assert!(matches!(parse_err("Stätus is empty"), FilterError::UnexpectedChar { .. }));
        assert!(matches!(parse_err("_x is empty"), FilterError::UnexpectedChar { .. }));
    }

    #[test]
    fn error_messages_are_readable() {
        let e = parse_err(r#"Status == "passing" garbage"#);
        assert_eq!(
            e.to_string(),
            "Failed to create boolean expression evaluator: syntax error at position 20: \
             expected \"and\", \"or\" or end of input, found \"garbage\""
        );
        let e = parse_err(r#"Status == "passing"#);
        assert_eq!(
            e.to_string(),
            "Failed to create boolean expression evaluator: syntax error at position 10: \
             unterminated string literal"
        );
        let e = parse_err("Status ==");
        assert!(e.to_string().ends_with("expected a value, found end of input"), "{e}");
        let e = parse_err(r#"(Status == "a""#);
        assert!(e.to_string().contains("unmatched parentheses"), "{e}");
    }

    #[test]
    fn filter_is_reusable_across_elements() {
        let f = Filter::parse(r#"Service.Meta.env == "prod" and Checks.Status == "passing""#).unwrap();
        let elems = [
            check_service_node(),
            json!({"Service": {"Meta": {"env": "dev"}}, "Checks": [{"Status": "passing"}]}),
            json!({"Service": {"Meta": {"env": "prod"}}, "Checks": []}),
            json!("not even an object"),
            Value::Null,
        ];
        let kept: Vec<bool> = elems.iter().map(|e| f.matches(e)).collect();
        assert_eq!(kept, [true, false, false, false, false]);
    }

    // ---- robustness ----

    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("Status"),
            Just("Service"),
            Just("Meta"),
            Just("Checks"),
            Just("Tags"),
            Just("env"),
            Just("k"),
            Just("status"),
            Just("")
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9 ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }),
            ]
        })
    }

    /// One of the whitespace-separated words of `words`.
    fn pick(words: &'static str) -> impl Strategy<Value = &'static str> {
        prop::sample::select(words.split_whitespace().collect::<Vec<_>>())
    }

    fn arb_expr_text() -> impl Strategy<Value = String> {
        let piece = pick(
            r#"and or not ( ) == != is empty in contains matches "passing" `ra\w` "" "(" 42 -1.5 true
               Status Checks.Status Service.Meta["env"] Tags Meta . [ ] " ` "\u00e9" "a.*""#,
        );
        prop::collection::vec((piece, prop::bool::ANY), 0..14).prop_map(|parts| {
            parts.into_iter().map(|(p, space)| if space { format!("{p} ") } else { p.to_owned() }).collect()
        })
    }

    /// Well-formed expressions, so evaluation gets exercised on every case.
    fn arb_filter_text() -> impl Strategy<Value = String> {
        let selector = pick(
            r#"Status status Checks.Status Checks.ServiceTags Service.Meta["env"] Service.Port Tags
               Meta Missing.Field Checks"#,
        );
        let value = pick(r#""passing" `ra\w` 42 -1.5 true passing "" "a.*" "(?i)P""#);
        let form = prop_oneof![
            Just("{s} == {v}"),
            Just("{s} != {v}"),
            Just("{s} is empty"),
            Just("{s} is not empty"),
            Just("{v} in {s}"),
            Just("{v} not in {s}"),
            Just("{s} contains {v}"),
            Just("{s} not contains {v}"),
            Just("{s} matches {v}"),
            Just("{s} not matches {v}"),
        ];
        let leaf = (form, selector, value).prop_map(|(f, s, v)| f.replace("{s}", s).replace("{v}", v));
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
                inner.clone().prop_map(|a| format!("not ({a})")),
                inner.prop_map(|a| format!("not {a}")),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_ascii_soup(s in "[ -~\t\n]{0,40}") {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn token_soup_never_panics(text in arb_expr_text(), v in arb_json()) {
            if let Ok(f) = Filter::parse(&text) {
                let _ = f.matches(&v);
            }
        }

        #[test]
        fn well_formed_filters_parse_and_never_panic(text in arb_filter_text(), v in arb_json()) {
            let f = Filter::parse(&text);
            prop_assert!(f.is_ok(), "{:?}: {:?}", text, f);
            if let Ok(f) = f {
                let _ = f.matches(&v);
                let _ = f.matches(&check_service_node());
                let _ = f.matches(&health_check());
            }
        }

        #[test]
        fn not_is_negation(text in arb_filter_text(), v in arb_json()) {
            let f = Filter::parse(&text).unwrap();
            let g = Filter::parse(&format!("not ({text})")).unwrap();
            prop_assert_eq!(f.matches(&v), !g.matches(&v));
            prop_assert_eq!(f.matches(&check_service_node()), !g.matches(&check_service_node()));
        }

        #[test]
        fn arrays_along_the_path_are_any_per_element(
            statuses in prop::collection::vec(
                prop_oneof![Just("passing"), Just("warning"), Just("critical")], 0..4),
            wanted in prop_oneof![Just("passing"), Just("warning"), Just("critical")],
        ) {
            let checks: Vec<Value> = statuses.iter().map(|s| json!({"Status": s})).collect();
            let v = json!({"Checks": checks});
            let eq = Filter::parse(&format!("Checks.Status == {wanted:?}")).unwrap();
            let ne = Filter::parse(&format!("Checks.Status != {wanted:?}")).unwrap();
            prop_assert_eq!(eq.matches(&v), statuses.contains(&wanted));
            prop_assert_eq!(ne.matches(&v), statuses.iter().any(|s| *s != wanted));
        }

        #[test]
        fn scalar_equality_is_exact_negation(s in "[a-z]{0,5}", t in "[a-z]{0,5}") {
            let v = json!({"Name": s});
            let eq = Filter::parse(&format!("Name == {t:?}")).unwrap().matches(&v);
            let ne = Filter::parse(&format!("Name != {t:?}")).unwrap().matches(&v);
            prop_assert_eq!(eq, s == t);
            prop_assert_eq!(ne, !eq);
        }
    }
}
