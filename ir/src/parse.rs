//! Parses the IR text that `print` writes, back into a [`Module`].
//!
//! The parser checks types with the op table as it goes, so a parsed module is well typed.
//! `; ...` to the end of a line is a comment. Errors name the line and column.

use std::collections::HashMap;

use crate::graph::{Func, Init, Module, ParamKind, Value};
use crate::op::{Attr, AttrKind, Op};
use crate::types::{DType, Dim, Shape, TensorType};

/// A parse error with its 1-based line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Value(String),  // %name
    Symbol(String), // @name
    Ident(String),
    Num(f64),
    Punct(&'static str),
    Eof,
}

struct Lexer {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(src: &str) -> Result<Vec<(Tok, usize, usize)>, ParseError> {
    let mut toks = Vec::new();
    for (ln, line) in src.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let (line_no, col) = (ln + 1, i + 1);
            if c == ';' {
                break;
            }
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            let take = |i: &mut usize, pred: &dyn Fn(char) -> bool| {
                let start = *i;
                while *i < chars.len() && pred(chars[*i]) {
                    *i += 1;
                }
                chars[start..*i].iter().collect::<String>()
            };
            let tok = if c == '%' || c == '@' {
                i += 1;
                let name = take(&mut i, &is_name_char);
                if name.is_empty() {
                    return Err(ParseError {
                        line: line_no,
                        col,
                        message: format!("expected a name after `{c}`"),
                    });
                }
                if c == '%' {
                    Tok::Value(name)
                } else {
                    Tok::Symbol(name)
                }
            } else if c == '-' && chars.get(i + 1) == Some(&'>') {
                i += 2;
                Tok::Punct("->")
            } else if c.is_ascii_digit()
                || (c == '-'
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == 'i'))
            {
                let start = i;
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    let exp_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '.' || exp_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let v = text.parse::<f64>().map_err(|_| ParseError {
                    line: line_no,
                    col,
                    message: format!("bad number `{text}`"),
                })?;
                Tok::Num(v)
            } else if c.is_ascii_alphabetic() || c == '_' {
                let word = take(&mut i, &|c: char| c.is_ascii_alphanumeric() || c == '_');
                match word.as_str() {
                    "inf" => Tok::Num(f64::INFINITY),
                    "nan" => Tok::Num(f64::NAN),
                    _ => Tok::Ident(word),
                }
            } else {
                i += 1;
                let p = match c {
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    '{' => "{",
                    '}' => "}",
                    ',' => ",",
                    ':' => ":",
                    '=' => "=",
                    _ => {
                        return Err(ParseError {
                            line: line_no,
                            col,
                            message: format!("unexpected character `{c}`"),
                        });
                    }
                };
                Tok::Punct(p)
            };
            toks.push((tok, line_no, col));
        }
    }
    let last = src.lines().count() + 1;
    toks.push((Tok::Eof, last, 1));
    Ok(toks)
}

impl Lexer {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    /// Whether the token after the current one is a value name (`, %x`).
    fn next_is_value(&self) -> bool {
        matches!(self.toks.get(self.pos + 1), Some((Tok::Value(_), _, _)))
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        let (_, line, col) = &self.toks[self.pos];
        Err(ParseError {
            line: *line,
            col: *col,
            message: message.into(),
        })
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::Punct(q) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            Ok(())
        } else {
            self.err(format!("expected `{p}`, found {}", describe(self.peek())))
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.err(format!("expected a word, found {}", describe(&t))),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        match self.peek() {
            Tok::Ident(s) if s == kw => {
                self.pos += 1;
                Ok(())
            }
            t => self.err(format!("expected `{kw}`, found {}", describe(t))),
        }
    }

    fn num(&mut self) -> Result<f64, ParseError> {
        match self.peek().clone() {
            Tok::Num(v) => {
                self.pos += 1;
                Ok(v)
            }
            t => self.err(format!("expected a number, found {}", describe(&t))),
        }
    }

    fn value_name(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Value(s) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.err(format!("expected a `%value`, found {}", describe(&t))),
        }
    }

    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let name = self.ident()?;
        let Some(dtype) = DType::from_name(&name) else {
            self.pos -= 1;
            return self.err(format!("unknown element type `{name}`"));
        };
        self.expect("[")?;
        let mut dims = Vec::new();
        if !self.eat("]") {
            loop {
                match self.next() {
                    Tok::Num(v) if v >= 0.0 && v.fract() == 0.0 => dims.push(Dim::Known(v as u64)),
                    Tok::Ident(s) => dims.push(Dim::Sym(s)),
                    t => {
                        self.pos -= 1;
                        return self.err(format!("expected a dimension, found {}", describe(&t)));
                    }
                }
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(TensorType::new(dtype, Shape(dims)))
    }

    fn usize_list(&mut self) -> Result<Vec<usize>, ParseError> {
        self.expect("[")?;
        let mut xs = Vec::new();
        if self.eat("]") {
            return Ok(xs);
        }
        loop {
            let v = self.num()?;
            if v < 0.0 || v.fract() != 0.0 || v > 1e9 {
                self.pos -= 1;
                return self.err("expected an axis number");
            }
            xs.push(v as usize);
            if self.eat("]") {
                return Ok(xs);
            }
            self.expect(",")?;
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Value(s) => format!("`%{s}`"),
        Tok::Symbol(s) => format!("`@{s}`"),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Num(v) => format!("`{v}`"),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Eof => "end of input".into(),
    }
}

/// Parses a module: any number of functions.
pub fn parse_module(src: &str) -> Result<Module, ParseError> {
    let mut lx = Lexer {
        toks: lex(src)?,
        pos: 0,
    };
    let mut module = Module::default();
    while *lx.peek() != Tok::Eof {
        module.funcs.push(parse_func(&mut lx)?);
    }
    Ok(module)
}

fn parse_func(lx: &mut Lexer) -> Result<Func, ParseError> {
    lx.keyword("func")?;
    let name = match lx.next() {
        Tok::Symbol(s) => s,
        t => {
            lx.pos -= 1;
            return lx.err(format!("expected `@name`, found {}", describe(&t)));
        }
    };
    let mut func = Func::new(name);
    let mut names: HashMap<String, Value> = HashMap::new();
    let define = |lx: &Lexer, names: &mut HashMap<String, Value>, n: String, v: Value| {
        if names.insert(n.clone(), v).is_some() {
            return lx.err(format!("`%{n}` is defined twice"));
        }
        Ok(())
    };
    lx.expect("(")?;
    if !lx.eat(")") {
        loop {
            let n = lx.value_name()?;
            lx.expect(":")?;
            let ty = lx.ty()?;
            let v = func.add_input(n.clone(), ty);
            define(lx, &mut names, n, v)?;
            if lx.eat(")") {
                break;
            }
            lx.expect(",")?;
        }
    }
    lx.expect("->")?;
    let mut out_tys = Vec::new();
    if lx.eat("(") {
        if !lx.eat(")") {
            loop {
                out_tys.push(lx.ty()?);
                if lx.eat(")") {
                    break;
                }
                lx.expect(",")?;
            }
        }
    } else {
        out_tys.push(lx.ty()?);
    }
    lx.expect("{")?;
    loop {
        match lx.peek().clone() {
            Tok::Ident(kw) if kw == "param" || kw == "state" || kw == "buffer" => {
                lx.pos += 1;
                let kind = match kw.as_str() {
                    "param" => ParamKind::Param,
                    "state" => ParamKind::State,
                    _ => ParamKind::Buffer,
                };
                let n = lx.value_name()?;
                lx.expect(":")?;
                let ty = lx.ty()?;
                lx.expect("=")?;
                let init = parse_init(lx)?;
                let v = func.add_param(kind, n.clone(), ty, init);
                define(lx, &mut names, n, v)?;
            }
            Tok::Value(n) => {
                lx.pos += 1;
                lx.expect("=")?;
                let v = parse_node(lx, &mut func, &names)?;
                define(lx, &mut names, n, v)?;
            }
            Tok::Ident(kw) if kw == "return" => {
                lx.pos += 1;
                loop {
                    let n = lx.value_name()?;
                    let Some(&v) = names.get(&n) else {
                        lx.pos -= 1;
                        return lx.err(format!("`%{n}` is not defined"));
                    };
                    func.outputs.push(v);
                    if !lx.eat(",") {
                        break;
                    }
                }
                lx.expect("}")?;
                break;
            }
            t => {
                return lx.err(format!(
                    "expected `param`, `state`, a `%value` or `return`, found {}",
                    describe(&t)
                ));
            }
        }
    }
    let got: Vec<TensorType> = func.output_types().into_iter().cloned().collect();
    if got != out_tys {
        return lx.err(format!(
            "`@{}` returns values of other types than its signature says",
            func.name
        ));
    }
    Ok(func)
}

fn parse_init(lx: &mut Lexer) -> Result<Init, ParseError> {
    let name = lx.ident()?;
    let mut args = Vec::new();
    if lx.eat("(") {
        loop {
            args.push(lx.num()?);
            if lx.eat(")") {
                break;
            }
            lx.expect(",")?;
        }
    }
    Ok(match (name.as_str(), args.as_slice()) {
        ("zeros", []) => Init::Zeros,
        ("ones", []) => Init::Ones,
        ("fill", [v]) => Init::Fill(*v),
        ("normal", [mean, std]) => Init::Normal {
            mean: *mean,
            std: *std,
        },
        ("uniform", [lo, hi]) => Init::Uniform { lo: *lo, hi: *hi },
        _ => {
            return lx.err(format!(
                "unknown initializer `{name}` with {} arguments",
                args.len()
            ));
        }
    })
}

fn parse_node(
    lx: &mut Lexer,
    func: &mut Func,
    names: &HashMap<String, Value>,
) -> Result<Value, ParseError> {
    let mnemonic = lx.ident()?;
    let Some(op) = Op::from_mnemonic(&mnemonic) else {
        lx.pos -= 1;
        return lx.err(format!("unknown op `{mnemonic}`"));
    };
    let info = op.info();
    let mut attr = Attr::None;
    if info.attr == AttrKind::Value {
        attr = Attr::Value(lx.num()?);
    }
    let mut args = Vec::new();
    let variadic = info.is_variadic();
    let mut i = 0;
    while i < info.arity || (variadic && lx.peek() == &Tok::Punct(",") && lx.next_is_value()) {
        if i > 0 {
            lx.expect(",")?;
        }
        i += 1;
        let n = lx.value_name()?;
        let Some(&v) = names.get(&n) else {
            lx.pos -= 1;
            return lx.err(format!("`%{n}` is not defined"));
        };
        args.push(v);
    }
    let list_attr = match info.attr {
        AttrKind::Axes => Some("axes"),
        AttrKind::Dims => Some("dims"),
        AttrKind::Perm => Some("perm"),
        AttrKind::None
        | AttrKind::Value
        | AttrKind::Window
        | AttrKind::Offset
        | AttrKind::Index
        | AttrKind::Axis
        | AttrKind::Loop
        | AttrKind::Output
        | AttrKind::Causal => None,
    };
    let sep = |lx: &mut Lexer, first: bool| {
        if first && info.arity == 0 {
            Ok(())
        } else {
            lx.expect(",")
        }
    };
    if info.attr == AttrKind::Window {
        let mut pairs = [[0usize; 2]; 3];
        for (i, key) in ["kernel", "stride", "pad"].iter().enumerate() {
            sep(lx, i == 0)?;
            lx.keyword(key)?;
            lx.expect("=")?;
            let xs = lx.usize_list()?;
            let Ok(pair) = <[usize; 2]>::try_from(xs.as_slice()) else {
                return lx.err(format!("`{key}` takes two sizes"));
            };
            pairs[i] = pair;
        }
        attr = Attr::Window {
            kernel: pairs[0],
            stride: pairs[1],
            pad: pairs[2],
        };
    }
    if matches!(info.attr, AttrKind::Offset | AttrKind::Index) {
        let keys = if info.attr == AttrKind::Offset {
            ["axis", "start"]
        } else {
            ["axis", "line"]
        };
        let mut vals = [0usize; 2];
        for (i, key) in keys.iter().enumerate() {
            sep(lx, i == 0)?;
            lx.keyword(key)?;
            lx.expect("=")?;
            let n = lx.num()?;
            if n < 0.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
                return lx.err(format!("`{key}` must be a non-negative integer"));
            }
            vals[i] = n as usize;
        }
        attr = if info.attr == AttrKind::Offset {
            Attr::Offset {
                axis: vals[0],
                start: vals[1],
            }
        } else {
            Attr::Index {
                axis: vals[0],
                line: vals[1],
            }
        };
    }
    if info.attr == AttrKind::Axis {
        lx.expect(",")?;
        lx.keyword("axis")?;
        lx.expect("=")?;
        let n = lx.num()?;
        if n < 0.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
            return lx.err("`axis` must be a non-negative integer".to_string());
        }
        attr = Attr::Axis(n as usize);
    }
    if info.attr == AttrKind::Causal {
        lx.expect(",")?;
        lx.keyword("causal")?;
        lx.expect("=")?;
        let n = lx.num()?;
        if n != 0.0 && n != 1.0 {
            return lx.err("`causal` must be 0 or 1".to_string());
        }
        attr = Attr::Causal(n == 1.0);
    }
    let mut counts = [0usize; 3];
    if matches!(info.attr, AttrKind::Loop | AttrKind::Output) {
        let keys: &[&str] = if info.attr == AttrKind::Loop {
            &["carries", "sequences", "reverse"]
        } else {
            &["output"]
        };
        for (i, key) in keys.iter().enumerate() {
            lx.expect(",")?;
            lx.keyword(key)?;
            lx.expect("=")?;
            let n = lx.num()?;
            if n < 0.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
                return lx.err(format!("`{key}` must be a non-negative integer"));
            }
            counts[i] = n as usize;
        }
        if info.attr == AttrKind::Output {
            attr = Attr::Output(counts[0]);
        }
    }
    if let Some(key) = list_attr {
        if info.arity > 0 {
            lx.expect(",")?;
        }
        lx.keyword(key)?;
        lx.expect("=")?;
        let xs = lx.usize_list()?;
        attr = match info.attr {
            AttrKind::Axes => Attr::Axes(xs),
            AttrKind::Dims => Attr::Dims(xs),
            _ => Attr::Perm(xs),
        };
    }
    lx.expect(":")?;
    let ty = lx.ty()?;
    if info.attr == AttrKind::Loop {
        let body = parse_func(lx)?;
        attr = Attr::Loop(Box::new(crate::graph::Loop {
            carries: counts[0],
            sequences: counts[1],
            reverse: counts[2] != 0,
            body,
        }));
    }
    if op == Op::ScanOut {
        let want = args.first().and_then(|&s| func.scan_result(s, counts[0]));
        if want.as_ref() != Some(&ty) {
            return lx.err(format!(
                "`scan_out` must read a result of a scan, of its type (found {ty})"
            ));
        }
    }
    let tys: Vec<&TensorType> = args.iter().map(|&v| func.ty(v)).collect();
    match op.result_type(&tys, &attr, Some(&ty)) {
        Ok(t) if t == ty => Ok(func.push(op, args, attr, ty)),
        Ok(t) => lx.err(format!("`{mnemonic}` gives {t}, but the node says {ty}")),
        Err(e) => lx.err(e),
    }
}
